//! `quorate shell`: an interactive SQL client of one node, like the rqlite
//! and mariadb clients.
//!
//! Statements end with `;` and may span lines; each is sent to the node's
//! `/db/request`, which runs it as a query when it is read-only and as a
//! write-set otherwise (the node asks SQLite, so `WITH ... SELECT` and
//! `PRAGMA` reads go the right way without the shell guessing from the
//! first word). Dot commands (`.tables`, `.schema`, `.status`, `.nodes`)
//! look at the database and the cluster. When stdin is not a terminal the
//! shell reads it without prompts, so scripts and tests can pipe statements;
//! it then exits 1 if any statement failed.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use super::http::{Answer, NodeClient};
use super::{failed, CliError, Console};
use crate::status::ClusterStatus;

/// How long one statement may take before the shell stops waiting; longer
/// than the node's own commit timeout, so the node's answer comes first.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

const HISTORY_FILE: &str = ".quorate_history";

#[derive(Debug, Clone, Args)]
pub struct ShellArgs {
    /// The node's client API, HOST:PORT or http://HOST:PORT.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4001")]
    pub node: String,

    /// Print each answer as the API's JSON, one line each (for scripts).
    #[arg(long)]
    pub json: bool,
}

const HELP: &str = "\
Statements end with ';' and may span several lines. Read-only statements
are queries; anything else is a write, replicated to every node.

.tables           list the tables (quorate's own _quorate_* tables are hidden)
.schema [TABLE]   show the CREATE statements (of TABLE only)
.status           this node's cluster status (as quorate --show-cluster-status)
.nodes            the members of the cluster and their API addresses
.help             this text
.quit             leave (also .exit or Ctrl-D)";

/// Runs the shell until `.quit` or end of input.
pub async fn run(args: ShellArgs, console: &mut Console<'_>) -> Result<(), CliError> {
    let client = NodeClient::new(&args.node, REQUEST_TIMEOUT)
        .map_err(|e| CliError::Failed(anyhow::Error::new(e)))?;
    let interactive = std::io::stdin().is_terminal();
    let mut input = if interactive {
        Input::editor()?
    } else {
        Input::Piped(std::io::stdin().lock())
    };
    let mut shell = Shell {
        client,
        json: args.json,
        failures: 0,
    };
    if interactive {
        console.note(format!(
            "quorate shell {} connected to {}; .help for help, .quit to leave",
            env!("CARGO_PKG_VERSION"),
            shell.client.base()
        ));
    }
    let prompt = format!("{}> ", shell.client.base().trim_start_matches("http://"));
    let continuation = format!("{:>width$}> ", "...", width = prompt.len() - 2);
    let mut buffer = StatementBuffer::default();
    loop {
        let shown = if buffer.is_blank() {
            &prompt
        } else {
            &continuation
        };
        let line = match input.read_line(shown)? {
            Line::Text(line) => line,
            Line::Interrupted => {
                buffer = StatementBuffer::default();
                continue;
            }
            Line::End => break,
        };
        if buffer.is_blank() && line.trim_start().starts_with('.') {
            input.remember(line.trim());
            match DotCommand::parse(&line) {
                Ok(DotCommand::Quit) => break,
                Ok(command) => shell.dot(command, console).await,
                Err(message) => shell.fail(console, message),
            }
            continue;
        }
        for statement in buffer.push_line(&line) {
            input.remember(&statement);
            shell.statement(&statement, console).await;
        }
    }
    if let Some(rest) = buffer.finish() {
        shell.statement(&rest, console).await;
    }
    input.save_history();
    if !interactive && shell.failures > 0 {
        return Err(failed(format!(
            "{} statement(s) or command(s) failed",
            shell.failures
        )));
    }
    Ok(())
}

enum Line {
    Text(String),
    /// Ctrl-C: drop the statement being typed.
    Interrupted,
    End,
}

enum Input {
    Editor(Box<rustyline::DefaultEditor>, Option<PathBuf>),
    Piped(std::io::StdinLock<'static>),
}

impl Input {
    fn editor() -> Result<Input, CliError> {
        let mut editor = rustyline::DefaultEditor::new()
            .map_err(|e| failed(format!("cannot set up line editing on this terminal: {e}")))?;
        let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(HISTORY_FILE));
        if let Some(path) = &history {
            // A missing history file is the normal first run.
            let _ = editor.load_history(path);
        }
        Ok(Input::Editor(Box::new(editor), history))
    }

    fn read_line(&mut self, prompt: &str) -> Result<Line, CliError> {
        match self {
            Input::Editor(editor, _) => {
                // rustyline blocks on the terminal; the runtime's other
                // threads keep the HTTP client's connections alive meanwhile.
                match tokio::task::block_in_place(|| editor.readline(prompt)) {
                    Ok(line) => Ok(Line::Text(line)),
                    Err(rustyline::error::ReadlineError::Interrupted) => Ok(Line::Interrupted),
                    Err(rustyline::error::ReadlineError::Eof) => Ok(Line::End),
                    Err(e) => Err(failed(format!("cannot read from the terminal: {e}"))),
                }
            }
            Input::Piped(stdin) => {
                let mut line = String::new();
                match stdin.read_line(&mut line) {
                    Ok(0) => Ok(Line::End),
                    Ok(_) => Ok(Line::Text(line.trim_end_matches(['\n', '\r']).to_string())),
                    Err(e) => Err(failed(format!("cannot read standard input: {e}"))),
                }
            }
        }
    }

    fn remember(&mut self, entry: &str) {
        if let Input::Editor(editor, _) = self {
            let _ = editor.add_history_entry(entry);
        }
    }

    fn save_history(&mut self) {
        if let Input::Editor(editor, Some(path)) = self {
            // Losing the history is not worth an error at exit.
            let _ = editor.save_history(path);
        }
    }
}

/// A dot command of the shell.
#[derive(Debug, PartialEq, Eq)]
enum DotCommand {
    Tables,
    Schema(Option<String>),
    Status,
    Nodes,
    Help,
    Quit,
}

impl DotCommand {
    fn parse(line: &str) -> Result<DotCommand, String> {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or("");
        let arg = words.next().map(|w| w.trim_end_matches(';').to_string());
        if words.next().is_some() {
            return Err(format!(
                "{name} takes at most one argument; .help lists the commands"
            ));
        }
        let no_arg = |command| match &arg {
            None => Ok(command),
            Some(a) => Err(format!("{name} takes no argument (got {a:?})")),
        };
        match name {
            ".tables" => no_arg(DotCommand::Tables),
            ".schema" => Ok(DotCommand::Schema(arg)),
            ".status" => no_arg(DotCommand::Status),
            ".nodes" => no_arg(DotCommand::Nodes),
            ".help" => Ok(DotCommand::Help),
            ".quit" | ".exit" => Ok(DotCommand::Quit),
            other => Err(format!("unknown command {other}; .help lists the commands")),
        }
    }
}

/// quorate's own tables and SQLite's are not the user's business.
const USER_OBJECTS: &str = "name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
     AND name NOT LIKE '\\_quorate\\_%' ESCAPE '\\'";

struct Shell {
    client: NodeClient,
    json: bool,
    failures: usize,
}

impl Shell {
    fn fail(&mut self, console: &mut Console<'_>, message: impl std::fmt::Display) {
        self.failures += 1;
        console.note(format!("Error: {message}"));
    }

    async fn statement(&mut self, sql: &str, console: &mut Console<'_>) {
        match self.client.post("/db/request", &json!([sql])).await {
            Ok(answer) => self.show_answer(&answer, console),
            Err(e) => self.fail(console, e),
        }
    }

    fn show_answer(&mut self, answer: &Answer, console: &mut Console<'_>) {
        let body = answer.json();
        if self.json {
            console.out(answer.text.trim_end());
        }
        match describe(answer.status.as_u16(), body.as_ref(), &answer.text) {
            Ok(text) => {
                if !self.json {
                    console.out(text);
                }
            }
            Err(message) => self.fail(console, message),
        }
    }

    async fn dot(&mut self, command: DotCommand, console: &mut Console<'_>) {
        let result = match command {
            DotCommand::Help => Ok(HELP.to_string()),
            DotCommand::Tables => {
                let sql = format!(
                    "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND \
                     {USER_OBJECTS} ORDER BY name"
                );
                self.query_column(json!([sql])).await
            }
            DotCommand::Schema(table) => {
                let mut statement = vec![json!(format!(
                    "SELECT sql || ';' FROM sqlite_master WHERE sql IS NOT NULL AND \
                     {USER_OBJECTS}{} ORDER BY tbl_name, type DESC, name",
                    if table.is_some() {
                        " AND tbl_name = ? COLLATE NOCASE"
                    } else {
                        ""
                    }
                ))];
                statement.extend(table.map(Value::from));
                self.query_column(json!([statement])).await
            }
            DotCommand::Status => self.status().await,
            DotCommand::Nodes => self.nodes().await,
            DotCommand::Quit => Ok(String::new()),
        };
        match result {
            Ok(text) if text.is_empty() => {}
            Ok(text) => console.out(text),
            Err(message) => self.fail(console, message),
        }
    }

    /// The first column of a query's rows, one per line.
    async fn query_column(&self, body: Value) -> Result<String, String> {
        let answer = self
            .client
            .post("/db/query", &body)
            .await
            .map_err(|e| e.to_string())?;
        if self.json {
            return Ok(answer.text.trim_end().to_string());
        }
        let json = answer.json();
        if answer.status.as_u16() != 200 {
            return Err(request_error(
                answer.status.as_u16(),
                json.as_ref(),
                &answer.text,
            ));
        }
        let result = json
            .as_ref()
            .and_then(|j| j["results"].get(0))
            .ok_or_else(|| format!("the node answered without results: {}", answer.text))?;
        if let Some(e) = result.get("error").and_then(Value::as_str) {
            return Err(e.to_string());
        }
        let lines: Vec<String> = result["values"]
            .as_array()
            .map(|rows| rows.iter().map(|r| cell(&r[0])).collect())
            .unwrap_or_default();
        Ok(lines.join("\n"))
    }

    async fn status(&self) -> Result<String, String> {
        let answer = self
            .client
            .get("/status")
            .await
            .map_err(|e| e.to_string())?;
        if self.json {
            return Ok(answer.text.trim_end().to_string());
        }
        let json = answer
            .json()
            .ok_or_else(|| format!("/status did not answer JSON: {}", answer.text))?;
        match serde_json::from_value::<ClusterStatus>(json["cluster"].clone()) {
            Ok(status) => Ok(status.render_table().trim_end().to_string()),
            // A node of another version: show what it said.
            Err(_) => Ok(serde_json::to_string_pretty(&json["cluster"]).unwrap_or_default()),
        }
    }

    async fn nodes(&self) -> Result<String, String> {
        let answer = self
            .client
            .get("/nodes?nonvoters&ver=2")
            .await
            .map_err(|e| e.to_string())?;
        if self.json {
            return Ok(answer.text.trim_end().to_string());
        }
        let json = answer
            .json()
            .ok_or_else(|| format!("/nodes did not answer JSON: {}", answer.text))?;
        let columns = ["id", "api_addr", "addr", "voter", "reachable", "leader"];
        let rows: Vec<Vec<String>> = json["nodes"]
            .as_array()
            .map(|nodes| {
                nodes
                    .iter()
                    .map(|n| columns.iter().map(|c| cell(&n[*c])).collect())
                    .collect()
            })
            .unwrap_or_default();
        let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        Ok(render_table(&columns, &rows).trim_end().to_string())
    }
}

/// What to print for the answer to one statement, or the error in plain
/// words.
fn describe(status: u16, body: Option<&Value>, text: &str) -> Result<String, String> {
    if status != 200 {
        return Err(request_error(status, body, text));
    }
    let result = body
        .and_then(|b| b["results"].get(0))
        .ok_or_else(|| format!("the node answered without results: {text}"))?;
    if let Some(e) = result.get("error").and_then(Value::as_str) {
        return Err(e.to_string());
    }
    if let Some(columns) = result.get("columns").and_then(Value::as_array) {
        let columns: Vec<String> = columns.iter().map(cell).collect();
        let rows: Vec<Vec<String>> = result["values"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        r.as_array()
                            .map(|r| r.iter().map(cell).collect())
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        let count = rows.len();
        return Ok(format!(
            "{}{count} row{}",
            render_table(&columns, &rows),
            if count == 1 { "" } else { "s" }
        ));
    }
    let affected = result["rows_affected"].as_i64().unwrap_or(0);
    Ok(format!(
        "{affected} row{} affected",
        if affected == 1 { "" } else { "s" }
    ))
}

/// A refused request in plain words: the node's message, and for the
/// cluster's own answers what happened to the statement and what to do.
fn request_error(status: u16, body: Option<&Value>, text: &str) -> String {
    let message = body
        .and_then(|b| b["error"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| text.trim().to_string());
    let advice = match body.and_then(|b| b["code"].as_str()) {
        Some("certification_failed") => {
            "another node changed the same rows first; nothing was applied, run it again"
        }
        Some("not_primary") => {
            "this node is not part of the primary component; nothing was applied. Use another \
             node (.nodes lists them) or wait until this one rejoins"
        }
        Some("outcome_unknown") => {
            "the write was submitted but the node could not learn whether it committed; \
             look with a SELECT before running it again"
        }
        _ => "",
    };
    match (message.is_empty(), advice.is_empty()) {
        (true, _) => format!("the node answered HTTP {status} without a message"),
        (false, true) => message,
        (false, false) => format!("{message} ({advice})"),
    }
}

/// A value as a table cell: text as itself, NULL spelled out.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An aligned table with a header, as the rqlite and mariadb clients print.
pub fn render_table(columns: &[String], rows: &[Vec<String>]) -> String {
    let width = |i: usize| {
        rows.iter()
            .filter_map(|r| r.get(i))
            .chain(columns.get(i))
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..columns.len()).map(width).collect();
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let line = |cells: &[String]| {
        widths
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                format!("| {c:<w$} ")
            })
            .collect::<String>()
            + "|\n"
    };
    let mut out = rule.clone();
    out.push_str(&line(columns));
    out.push_str(&rule);
    for row in rows {
        out.push_str(&line(row));
    }
    if !rows.is_empty() {
        out.push_str(&rule);
    }
    out
}

/// Collects typed lines into complete statements: a `;` outside quotes,
/// identifiers and comments ends one; inside `CREATE TRIGGER` only an
/// `END;` does, since the trigger's body holds `;`s of its own.
#[derive(Debug, Default)]
pub struct StatementBuffer {
    text: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Lex {
    Code,
    Quoted(char),
    LineComment,
    BlockComment,
}

impl StatementBuffer {
    /// Adds a line; returns the statements it completed (without their `;`).
    pub fn push_line(&mut self, line: &str) -> Vec<String> {
        self.text.push_str(line);
        self.text.push('\n');
        let mut done = Vec::new();
        while let Some(end) = statement_end(&self.text) {
            let statement = self.text[..end].trim().to_string();
            self.text.drain(..=end);
            if !is_blank(&statement) {
                done.push(statement);
            }
        }
        done
    }

    /// No statement begun (comments and whitespace do not count).
    pub fn is_blank(&self) -> bool {
        is_blank(&self.text)
    }

    /// What is left at the end of input, if anything: a last statement
    /// without its `;`.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.text);
        (!is_blank(&rest)).then(|| rest.trim().to_string())
    }
}

/// Walks `sql` outside quotes and comments, calling `code` with each byte
/// offset and character of code.
fn walk_code(sql: &str, mut code: impl FnMut(usize, char) -> bool) {
    let mut lex = Lex::Code;
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next = chars.peek().map(|(_, n)| *n);
        match lex {
            Lex::Code => match (c, next) {
                ('\'' | '"' | '`', _) => lex = Lex::Quoted(c),
                ('[', _) => lex = Lex::Quoted(']'),
                ('-', Some('-')) => lex = Lex::LineComment,
                ('/', Some('*')) => {
                    chars.next();
                    lex = Lex::BlockComment;
                }
                _ => {
                    if !code(i, c) {
                        return;
                    }
                }
            },
            // A doubled quote inside quotes is the quote itself: leaving and
            // re-entering the quoted state handles it.
            Lex::Quoted(close) if c == close => lex = Lex::Code,
            Lex::Quoted(_) => {}
            Lex::LineComment if c == '\n' => lex = Lex::Code,
            Lex::LineComment => {}
            Lex::BlockComment if c == '*' && next == Some('/') => {
                chars.next();
                lex = Lex::Code;
            }
            Lex::BlockComment => {}
        }
    }
}

/// Byte offset of the `;` that ends the first statement in `sql`.
fn statement_end(sql: &str) -> Option<usize> {
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut end = None;
    walk_code(sql, |i, c| {
        if c.is_alphanumeric() || c == '_' {
            word.push(c.to_ascii_uppercase());
            return true;
        }
        if !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        if c != ';' {
            return true;
        }
        let trigger = words.first().is_some_and(|w| w == "CREATE")
            && words.iter().skip(1).take(2).any(|w| w == "TRIGGER");
        if trigger && words.last().is_none_or(|w| w != "END") {
            return true;
        }
        end = Some(i);
        false
    });
    end
}

/// Only whitespace, `;` and comments.
fn is_blank(sql: &str) -> bool {
    let mut blank = true;
    walk_code(sql, |_, c| {
        blank = c.is_whitespace() || c == ';';
        blank
    });
    blank
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(lines: &[&str]) -> (Vec<String>, Option<String>) {
        let mut b = StatementBuffer::default();
        let mut out = Vec::new();
        for l in lines {
            out.extend(b.push_line(l));
        }
        (out, b.finish())
    }

    #[test]
    fn statements_end_at_semicolons_outside_quotes_and_comments() {
        let (s, rest) = split(&[
            "SELECT 1; SELECT 'a;b'",
            ", \"c;\" -- d;",
            "; SELECT [x;y] /* ; */;",
        ]);
        assert_eq!(
            s,
            [
                "SELECT 1",
                "SELECT 'a;b'\n, \"c;\" -- d;",
                "SELECT [x;y] /* ; */"
            ]
        );
        assert_eq!(rest, None);
    }

    #[test]
    fn a_statement_spans_lines_and_the_last_needs_no_semicolon() {
        let mut b = StatementBuffer::default();
        assert!(b.is_blank());
        assert!(b.push_line("SELECT *").is_empty());
        assert!(!b.is_blank());
        assert!(b.push_line("  FROM t").is_empty());
        assert_eq!(
            b.push_line("  WHERE s = 'it''s';"),
            ["SELECT *\n  FROM t\n  WHERE s = 'it''s'"]
        );
        assert!(b.is_blank());
        b.push_line("SELECT 2");
        assert_eq!(b.finish().as_deref(), Some("SELECT 2"));
        assert_eq!(b.finish(), None);
    }

    #[test]
    fn comments_and_empty_statements_are_not_statements() {
        let (s, rest) = split(&["-- a comment;", ";;", "/* block", " ; */"]);
        assert!(s.is_empty(), "{s:?}");
        assert_eq!(rest, None);
    }

    #[test]
    fn a_trigger_ends_at_end() {
        let (s, rest) = split(&[
            "CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN",
            "  INSERT INTO log VALUES (new.id);",
            "  UPDATE c SET n = n + 1;",
            "END; SELECT 1;",
        ]);
        assert_eq!(s.len(), 2, "{s:?}");
        assert!(s[0].starts_with("CREATE TRIGGER") && s[0].ends_with("END"));
        assert_eq!(s[1], "SELECT 1");
        assert_eq!(rest, None);
        let (s, _) = split(&["create temp trigger x before delete on t begin select 1; end;"]);
        assert_eq!(s.len(), 1, "{s:?}");
    }

    #[test]
    fn dot_commands() {
        assert_eq!(DotCommand::parse(".tables"), Ok(DotCommand::Tables));
        assert_eq!(DotCommand::parse(" .schema"), Ok(DotCommand::Schema(None)));
        assert_eq!(
            DotCommand::parse(".schema users;"),
            Ok(DotCommand::Schema(Some("users".into())))
        );
        assert_eq!(DotCommand::parse(".exit"), Ok(DotCommand::Quit));
        assert!(DotCommand::parse(".tables x")
            .unwrap_err()
            .contains("no argument"));
        assert!(DotCommand::parse(".drop").unwrap_err().contains(".help"));
    }

    #[test]
    fn tables_are_aligned() {
        let t = render_table(
            &["id".into(), "name".into()],
            &[
                vec!["1".into(), "alpha".into()],
                vec!["22".into(), "β".into()],
            ],
        );
        assert_eq!(
            t,
            "+----+-------+\n| id | name  |\n+----+-------+\n| 1  | alpha |\n| 22 | β     |\n+----+-------+\n"
        );
    }

    #[test]
    fn answers_in_words() {
        let q =
            json!({"results": [{"columns": ["a"], "types": ["integer"], "values": [[1], [null]]}]});
        assert_eq!(
            describe(200, Some(&q), "").unwrap(),
            "+------+\n| a    |\n+------+\n| 1    |\n| NULL |\n+------+\n2 rows"
        );
        let empty = json!({"results": [{"columns": ["a"], "types": ["integer"]}]});
        assert!(describe(200, Some(&empty), "").unwrap().ends_with("0 rows"));
        let w = json!({"results": [{"last_insert_id": 3, "rows_affected": 1}]});
        assert_eq!(describe(200, Some(&w), "").unwrap(), "1 row affected");
        assert_eq!(
            describe(200, Some(&json!({"results": [{}]})), "").unwrap(),
            "0 rows affected"
        );
        let e = json!({"results": [{"error": "no such table: x"}]});
        assert_eq!(describe(200, Some(&e), "").unwrap_err(), "no such table: x");
        let c = json!({"error": "certification failed", "code": "certification_failed"});
        let text = describe(409, Some(&c), "").unwrap_err();
        assert!(
            text.contains("certification failed") && text.contains("run it again"),
            "{text}"
        );
        let n = json!({"error": "not in the primary component", "code": "not_primary"});
        assert!(describe(503, Some(&n), "")
            .unwrap_err()
            .contains("another node"));
        assert_eq!(
            describe(502, None, " bad gateway\n").unwrap_err(),
            "bad gateway"
        );
    }
}
