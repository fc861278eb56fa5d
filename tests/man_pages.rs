//! The man pages in `man/` against the product they document:
//!
//! - `quorate.8` documents every flag and subcommand of the CLI (walked from
//!   its clap definition), every row of the status table and every exit
//!   status constant of `src/cli/mod.rs`, and has the outage procedures;
//! - `quorated.8` documents every flag `quorated --help` lists, the exit
//!   statuses of `src/bin/quorated.rs` and the files in `data_dir`;
//! - `quorate.toml.5` documents every key of `documented_keys()`: its KEYS
//!   section is generated from that list and must match it exactly
//!   (`QUORATE_UPDATE_MAN=1 cargo test --test man_pages` rewrites it).
//!
//! Every page has NAME, SYNOPSIS and DESCRIPTION, and, when groff is
//! installed, formats without a single warning (`groff -man -ww -z`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use quorate::config::{documented_keys, Config, ConfigKeyDoc};

const PAGES: [&str; 3] = ["quorate.8", "quorated.8", "quorate.toml.5"];
const KEYS_BEGIN: &str = ".\\\" BEGIN KEYS\n";
const KEYS_END: &str = ".\\\" END KEYS\n";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn page(name: &str) -> String {
    let path = root().join("man").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Roff text as a reader sees it: font escapes dropped, `\-` as `-`,
/// named characters as themselves, the quotes of macro arguments removed.
fn plain(roff: &str) -> String {
    let mut s = roff
        .replace("\\-", "-")
        .replace("\\(aq", "'")
        .replace("\\(dq", "\"")
        .replace("\\(em", "--")
        .replace("\\(bu", "*")
        .replace("\\e", "\\")
        .replace("\\&", "")
        .replace("\\%", "");
    for font in ["\\fB", "\\fI", "\\fR", "\\fP", "\\fC"] {
        s = s.replace(font, "");
    }
    s
}

/// A macro line's arguments as words: `.BI \-\-config " PATH"` gives
/// `--config PATH`; `.BR \-h ", " \-\-help` gives `-h, --help`.
fn macro_words(line: &str) -> String {
    let rest = line.split_once(' ').map(|(_, r)| r).unwrap_or("");
    let text = plain(rest);
    // Alternating-font macros join their arguments; quotes only group.
    let mut out = String::new();
    let mut in_quote = false;
    for c in text.chars() {
        match c {
            '"' => in_quote = !in_quote,
            ' ' if !in_quote => {}
            c => out.push(c),
        }
    }
    if !line.starts_with(".B ") && !line.starts_with(".I ") {
        return out;
    }
    text.replace('"', "")
}

/// A section body as running text: macro lines give their words, other
/// control lines (`.PP`, `.TP`, comments) nothing.
fn flow(body: &str) -> String {
    body.lines()
        .filter_map(|l| {
            if !l.starts_with('.') {
                return Some(plain(l));
            }
            let known = [
                ".B ", ".I ", ".BR ", ".BI ", ".IR ", ".RB ", ".RI ", ".IB ", ".SY ",
            ];
            known
                .iter()
                .any(|m| l.starts_with(m))
                .then(|| macro_words(l))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The top-level sections (`.SH`) of a page: name → body.
fn sections(roff: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in roff.lines() {
        if let Some(name) = line.strip_prefix(".SH ") {
            out.push((plain(name).trim_matches('"').to_string(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

fn section(roff: &str, name: &str, page_name: &str) -> String {
    sections(roff)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, b)| b)
        .unwrap_or_else(|| panic!("{page_name} has no {name} section"))
}

/// Subsections (`.SS`) of a section body: heading → body.
fn subsections(body: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in body.lines() {
        if let Some(name) = line.strip_prefix(".SS ") {
            out.push((plain(name).trim_matches('"').to_string(), String::new()));
        } else if let Some((_, b)) = out.last_mut() {
            b.push_str(line);
            b.push('\n');
        }
    }
    out
}

/// The tags of the `.TP` items in `body` (the line after each `.TP`), as
/// words: `--config PATH`, `-h, --help`, `wsrep_ready`, `3`.
fn item_tags(body: &str) -> Vec<String> {
    let lines: Vec<&str> = body.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0] == ".TP")
        .map(|w| {
            if w[1].starts_with('.') {
                macro_words(w[1])
            } else {
                plain(w[1])
            }
        })
        .collect()
}

/// Whether some item tag names `word` (as a whole token).
fn tagged(tags: &[String], word: &str) -> bool {
    tags.iter().any(|t| {
        t.split(|c: char| c.is_whitespace() || c == ',' || c == '|')
            .any(|tok| tok == word)
    })
}

#[test]
fn every_page_has_the_standard_sections() {
    for name in PAGES {
        let roff = page(name);
        assert!(roff.contains("\n.TH "), "{name}: no .TH line");
        let names: Vec<String> = sections(&roff).into_iter().map(|(n, _)| n).collect();
        for required in ["NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"] {
            assert!(
                names.iter().any(|n| n == required),
                "{name} lacks the {required} section; it has {names:?}"
            );
        }
        assert_eq!(names[0], "NAME", "{name}: NAME must come first");
        // `whatis`/`apropos` read the NAME line: "name \- summary".
        let stem = name.rsplit_once('.').unwrap().0;
        let name_body = section(&roff, "NAME", name);
        assert!(
            name_body
                .trim()
                .starts_with(&format!("{} \\- ", stem.replace('-', "\\-"))),
            "{name}: NAME line must read `{stem} \\- summary`, got {name_body:?}"
        );
    }
}

/// Every long flag, positional argument and subcommand of the CLI, walked
/// from clap: (subcommand path, what, how it is written).
fn cli_items() -> Vec<(Vec<String>, String)> {
    fn walk(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
        for arg in cmd.get_arguments() {
            if arg.get_id() == "help" {
                continue;
            }
            if let Some(long) = arg.get_long() {
                out.push((path.clone(), format!("--{long}")));
            } else if arg.is_positional() {
                let name = arg
                    .get_value_names()
                    .and_then(|v| v.first().map(|s| s.to_string()))
                    .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
                out.push((path.clone(), name));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            let mut p = path.clone();
            p.push(sub.get_name().to_string());
            out.push((p.clone(), String::new()));
            walk(sub, p, out);
        }
    }
    let mut out = Vec::new();
    walk(&quorate::cli::Cli::command(), Vec::new(), &mut out);
    out
}

#[test]
fn quorate_8_documents_every_flag_and_subcommand() {
    let roff = page("quorate.8");
    let items = cli_items();
    assert!(
        items
            .iter()
            .any(|(p, f)| p.is_empty() && f == "--bootstrap-node"),
        "walking the CLI found no --bootstrap-node: {items:?}"
    );
    let mut top_tags = item_tags(&section(&roff, "ACTIONS", "quorate.8"));
    top_tags.extend(item_tags(&section(&roff, "OPTIONS", "quorate.8")));
    let subs = subsections(&section(&roff, "SUBCOMMANDS", "quorate.8"));
    let synopsis = flow(&section(&roff, "SYNOPSIS", "quorate.8"));

    let mut missing = Vec::new();
    for (path, flag) in &items {
        if path.is_empty() {
            if !tagged(&top_tags, flag) {
                missing.push(format!("{flag} (an item in ACTIONS or OPTIONS)"));
            }
            if flag.starts_with("--") && !synopsis.contains(flag.as_str()) {
                missing.push(format!("{flag} (in SYNOPSIS)"));
            }
            continue;
        }
        let heading = format!("quorate {}", path.join(" "));
        // A subcommand with subcommands of its own (tls) is documented
        // through them.
        let leaf_has_children = items
            .iter()
            .any(|(p, _)| p.len() > path.len() && p.starts_with(path));
        let found: Vec<&(String, String)> = subs
            .iter()
            .filter(|(h, _)| h == &heading || h.starts_with(&format!("{heading} ")))
            .collect();
        if flag.is_empty() {
            if found.is_empty() && !leaf_has_children {
                missing.push(format!("subcommand `{heading}` (a .SS in SUBCOMMANDS)"));
            }
            if !synopsis.contains(&heading) && !leaf_has_children {
                missing.push(format!("subcommand `{heading}` (in SYNOPSIS)"));
            }
            continue;
        }
        let tags: Vec<String> = found.iter().flat_map(|(_, b)| item_tags(b)).collect();
        if !tagged(&tags, flag) {
            missing.push(format!("{flag} of `{heading}` (an item under its .SS)"));
        }
    }
    assert!(
        missing.is_empty(),
        "man/quorate.8 does not document:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn quorate_8_documents_every_status_row() {
    let roff = page("quorate.8");
    let tags = item_tags(&section(&roff, "STATUS TABLE", "quorate.8"));
    let status =
        quorate::cli::files::offline_status(&Config::new("node-a"), None, None).wsrep_rows();
    assert!(status.len() >= 13, "{status:?}");
    let missing: Vec<&str> = status
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !tagged(&tags, name))
        .collect();
    assert!(
        missing.is_empty(),
        "STATUS TABLE of man/quorate.8 does not explain the rows {missing:?}"
    );
    for state in [
        "Primary",
        "non-Primary",
        "Disconnected",
        "Synced",
        "Donor",
        "Joiner",
    ] {
        assert!(
            plain(&roff).contains(state),
            "quorate.8 never names {state}"
        );
    }
}

/// `pub const EXIT_NAME: u8 = N;` in a source file.
fn exit_constants(source: &str) -> Vec<(String, u8)> {
    source
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("pub const EXIT_")?;
            let (name, value) = rest.split_once(": u8 = ")?;
            let value = value.trim_end_matches(';').trim().parse().ok()?;
            Some((format!("EXIT_{name}"), value))
        })
        .collect()
}

#[test]
fn quorate_8_documents_every_exit_status() {
    let source = std::fs::read_to_string(root().join("src/cli/mod.rs")).unwrap();
    let codes = exit_constants(&source);
    let from_crate = [
        quorate::cli::EXIT_OK,
        quorate::cli::EXIT_ERROR,
        quorate::cli::EXIT_USAGE,
        quorate::cli::EXIT_BOOTSTRAP_REFUSED,
        quorate::cli::EXIT_NOT_RUNNING,
        quorate::cli::EXIT_TIMEOUT,
    ];
    for c in from_crate {
        assert!(
            codes.iter().any(|(_, v)| *v == c),
            "exit status {c} not found by parsing src/cli/mod.rs: {codes:?}"
        );
    }
    let roff = page("quorate.8");
    let tags = item_tags(&section(&roff, "EXIT STATUS", "quorate.8"));
    for (name, value) in &codes {
        assert!(
            tagged(&tags, &value.to_string()),
            "EXIT STATUS of man/quorate.8 lacks {value} ({name}); it has {tags:?}"
        );
    }
}

#[test]
fn quorate_8_has_the_outage_procedures() {
    let roff = page("quorate.8");
    let outage = section(&roff, "OUTAGE PROCEDURES", "quorate.8");
    let headings: Vec<String> = subsections(&outage).into_iter().map(|(h, _)| h).collect();
    for needle in [
        "One node stopped gracefully",
        "Two nodes stopped gracefully",
        "All nodes stopped gracefully",
        "One node killed",
        "Two nodes killed",
        "All nodes killed",
        "One node cut off",
        "All links cut",
        "Which node to bootstrap",
        "When to force",
    ] {
        assert!(
            headings.iter().any(|h| h.starts_with(needle)),
            "OUTAGE PROCEDURES lacks `{needle}`; it has {headings:?}"
        );
    }
    let text = plain(&outage);
    for needle in [
        "safe_to_bootstrap: 1",
        "quorate --recover",
        "quorate --force-safe-to-bootstrap",
        "quorate --bootstrap-node",
        "quorate --restart-node",
        "incarnation",
    ] {
        assert!(
            text.contains(needle),
            "OUTAGE PROCEDURES never says {needle:?}"
        );
    }
    let fencing = plain(&section(&roff, "FENCING", "quorate.8"));
    for needle in [
        "incarnation",
        "data_dir",
        "SST",
        "--restart-node",
        "silently",
    ] {
        assert!(fencing.contains(needle), "FENCING never says {needle:?}");
    }
    // The refusal banner, exactly as the CLI prints it.
    let plain_roff = plain(&roff);
    for line in quorate::status::BOOTSTRAP_REFUSED_BANNER.lines() {
        assert!(plain_roff.contains(line), "banner line missing: {line}");
    }
}

#[test]
fn quorated_8_documents_every_flag_of_its_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_quorated"))
        .arg("--help")
        .output()
        .expect("run quorated --help");
    assert!(out.status.success(), "quorated --help failed: {out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    let flags: BTreeSet<String> = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter(|w| w.starts_with('-') && w.len() > 1 && w != &"-")
        .map(|w| w.split('=').next().unwrap().to_string())
        .filter(|w| {
            w.trim_start_matches('-')
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        .collect();
    for expected in ["--config", "--bootstrap", "--help"] {
        assert!(
            flags.contains(expected),
            "quorated --help lacks {expected}: {help}"
        );
    }
    let roff = page("quorated.8");
    let tags = item_tags(&section(&roff, "OPTIONS", "quorated.8"));
    let synopsis = flow(&section(&roff, "SYNOPSIS", "quorated.8"));
    let missing: Vec<&String> = flags
        .iter()
        .filter(|f| !tagged(&tags, f) || !synopsis.contains(f.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "man/quorated.8 does not document {missing:?} (an item in OPTIONS and in SYNOPSIS)"
    );
}

#[test]
fn quorated_8_documents_exit_statuses_and_files() {
    let source = std::fs::read_to_string(root().join("src/bin/quorated.rs")).unwrap();
    let mut codes: BTreeSet<u8> = [0, 1].into();
    for piece in source.split("ExitCode::from(").skip(1) {
        let number: String = piece.chars().take_while(|c| c.is_ascii_digit()).collect();
        if let Ok(n) = number.parse() {
            codes.insert(n);
        }
    }
    assert!(
        codes.contains(&78),
        "quorated no longer exits 78 for a bad config? {codes:?}"
    );
    let roff = page("quorated.8");
    let tags = item_tags(&section(&roff, "EXIT STATUS", "quorated.8"));
    for c in codes {
        assert!(
            tagged(&tags, &c.to_string()),
            "EXIT STATUS of quorated.8 lacks {c}"
        );
    }

    let files = section(&roff, "FILES", "quorated.8");
    let tags = item_tags(&files);
    for name in [
        quorate::cli::files::DB_FILE,
        "log/",
        "snapshots/",
        "grastate.dat",
        quorate::cli::start::LOG_FILE,
        quorate::cli::start::BOOTSTRAP_REQUEST_FILE,
        "quorate.sock",
    ] {
        assert!(tagged(&tags, name), "FILES of quorated.8 lacks {name}");
    }
    let config = Config::new("node-a");
    assert_eq!(config.socket_path().file_name().unwrap(), "quorate.sock");
    assert_eq!(config.grastate_path().file_name().unwrap(), "grastate.dat");
    let text = plain(&roff);
    for needle in [
        "SIGTERM",
        "SIGINT",
        "RUST_LOG",
        "log_level",
        "quorated.service",
        "78",
    ] {
        assert!(text.contains(needle), "quorated.8 never says {needle}");
    }
}

/// Roff text for a sentence of a key's documentation.
fn escape(text: &str) -> String {
    let mut out = String::new();
    let mut code = false;
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            '\'' => out.push_str("\\(aq"),
            '`' => {
                out.push_str(if code { "\\fR" } else { "\\fB" });
                code = !code;
            }
            c => out.push(c),
        }
    }
    if code {
        out.push_str("\\fR");
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

fn section_heading(table: &str) -> String {
    if table.is_empty() {
        "Top level".to_string()
    } else {
        format!("[{table}]")
    }
}

/// The KEYS block of quorate.toml(5), generated from the config's one list
/// of keys.
fn render_keys(keys: &[ConfigKeyDoc]) -> String {
    let mut out = String::new();
    let mut current: Option<&str> = None;
    for d in keys {
        let (table, name) = d.key.split_once('.').unwrap_or(("", d.key));
        if current != Some(table) {
            current = Some(table);
            out.push_str(&format!(".SS \"{}\"\n", section_heading(table)));
        }
        out.push_str(".TP\n");
        out.push_str(&format!(".B {name}\n"));
        out.push_str(&format!("{}\n", escape(d.doc)));
        out.push_str(".br\n");
        out.push_str(&format!("Value: {}.\n", escape(d.expected)));
        out.push_str(".br\n");
        if d.default.is_empty() {
            out.push_str(&format!(
                "Default: not set. Example: \\fB{name} = {}\\fR.\n",
                escape(d.example)
            ));
        } else {
            out.push_str(&format!("Default: \\fB{}\\fR.\n", escape(d.default)));
        }
    }
    out
}

#[test]
fn quorate_toml_5_documents_every_key() {
    let path = root().join("man/quorate.toml.5");
    let roff = page("quorate.toml.5");
    let start = roff
        .find(KEYS_BEGIN)
        .expect("quorate.toml.5 lacks the BEGIN KEYS marker")
        + KEYS_BEGIN.len();
    let end = roff
        .find(KEYS_END)
        .expect("quorate.toml.5 lacks the END KEYS marker");
    let expected = render_keys(documented_keys());
    if std::env::var_os("QUORATE_UPDATE_MAN").is_some() && roff[start..end] != expected {
        let updated = format!("{}{}{}", &roff[..start], expected, &roff[end..]);
        std::fs::write(&path, updated).unwrap();
        eprintln!("rewrote the KEYS section of {}", path.display());
        return;
    }

    // First the plain question, with a message that names the key.
    let keys = section(&roff, "KEYS", "quorate.toml.5");
    let subs = subsections(&keys);
    for d in documented_keys() {
        let (table, name) = d.key.split_once('.').unwrap_or(("", d.key));
        let heading = section_heading(table);
        let tags: Vec<String> = subs
            .iter()
            .filter(|(h, _)| *h == heading)
            .flat_map(|(_, b)| item_tags(b))
            .collect();
        assert!(
            tagged(&tags, name),
            "man/quorate.toml.5 does not document `{}` (an item under .SS \"{heading}\"); \
             run QUORATE_UPDATE_MAN=1 cargo test --test man_pages",
            d.key
        );
    }
    // Then every word: defaults and descriptions must be the real ones.
    assert!(
        roff[start..end] == expected,
        "the KEYS section of man/quorate.toml.5 differs from documented_keys(); \
         run QUORATE_UPDATE_MAN=1 cargo test --test man_pages and commit the result.\n\
         expected:\n{expected}"
    );
}

/// The first `.EX` block of a section, as plain text.
fn first_example(body: &str) -> String {
    let start = body.find(".EX\n").expect("no .EX block") + 4;
    let end = start + body[start..].find(".EE\n").expect("no .EE");
    plain(&body[start..end])
}

#[test]
fn quorate_toml_5_example_is_a_valid_config() {
    let roff = page("quorate.toml.5");
    let example = first_example(&section(&roff, "EXAMPLE", "quorate.toml.5"));
    let config =
        Config::parse(&example, Path::new("quorate.toml(5) EXAMPLE")).unwrap_or_else(|e| {
            panic!("the example of quorate.toml(5) does not parse: {e}\n{example}")
        });
    assert_eq!(config.node_name, "node-a");
    assert_eq!(config.replication.peers.len(), 3);
    assert!(config.tls.is_some());
    // Every table of the file is shown.
    for table in ["[replication]", "[api]", "[tls]", "[storage]"] {
        assert!(example.contains(table), "the example lacks {table}");
    }
}

#[test]
fn pages_format_without_warnings() {
    let Ok(version) = Command::new("groff").arg("--version").output() else {
        eprintln!(
            "groff is not installed: skipping the formatting check (apt-get install groff-base)"
        );
        return;
    };
    assert!(version.status.success());
    for name in PAGES {
        let path = root().join("man").join(name);
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "groff -man -ww warns about {name}:\n{stderr}"
        );
        // Rendered as `man` shows it, no line runs past 80 columns except
        // the verbatim examples, which are written to fit.
        let out = Command::new("groff")
            .args(["-man", "-Tascii", "-rLL=78n", "-P-c", "-P-b", "-P-u"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines() {
            assert!(
                line.chars().count() <= 80,
                "{name}: rendered line longer than 80 columns:\n{line}"
            );
        }
    }
}
