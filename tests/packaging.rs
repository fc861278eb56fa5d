//! The packages in `packaging/` and `[package.metadata.deb]`:
//!
//! - the example config installed as /etc/quorate/quorate.toml is
//!   `Config::example_toml()` with `node_name` commented out (so the daemon
//!   refuses to start until the administrator names the node); it shows every
//!   documented key, and it parses once `node_name` is set
//!   (`QUORATE_UPDATE_PACKAGING=1 cargo test --test packaging` rewrites it);
//! - the Debian assets exist, install the binaries, the unit, the man pages
//!   and the config (a conffile), and the RPM spec installs the same files;
//! - the maintainer scripts are valid sh, create the system user, and enable
//!   nothing;
//! - the .deb really builds (`cargo deb`, a release build in a target
//!   directory of its own) and installs with `dpkg -i`: `quorate --version`,
//!   `man -w quorate` and the unit are in place, and `dpkg -r` removes the
//!   programs but keeps the node's data. That needs root and cargo-deb
//!   (`.ci/run` installs it); without them the test says why it did not
//!   run, except under CI=true, where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use quorate::config::{documented_keys, Config, ConfigError};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

const CONFIG_HEADER: &str = "\
# /etc/quorate/quorate.toml, installed by the quorate package.
#
# Set node_name below (and, for a cluster, replication.advertise,
# replication.peers and the [tls] section: see `quorate tls` in quorate(8)),
# then start the node with: systemctl enable --now quorated
# Until node_name is set, quorated refuses to start (exit status 78).
#
";

const NODE_NAME_LINE: &str = "\nnode_name = \"node-a\"\n";
const NODE_NAME_COMMENTED: &str = "\n#node_name = \"node-a\"\n";

/// What packaging/quorate.toml must hold.
fn packaged_config() -> String {
    let example = Config::example_toml();
    assert!(
        example.contains(NODE_NAME_LINE),
        "Config::example_toml() no longer sets node_name as this test expects:\n{example}"
    );
    format!(
        "{CONFIG_HEADER}{}",
        example.replacen(NODE_NAME_LINE, NODE_NAME_COMMENTED, 1)
    )
}

#[test]
fn packaged_config_is_the_example_without_a_node_name() {
    let path = root().join("packaging/quorate.toml");
    let expected = packaged_config();
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    if std::env::var_os("QUORATE_UPDATE_PACKAGING").is_some() && actual != expected {
        std::fs::write(&path, &expected).unwrap();
        eprintln!("rewrote {}", path.display());
        return;
    }
    assert!(
        actual == expected,
        "packaging/quorate.toml differs from Config::example_toml(); run \
         QUORATE_UPDATE_PACKAGING=1 cargo test --test packaging and commit the result"
    );
}

#[test]
fn packaged_config_shows_every_key_and_parses_once_named() {
    let text = read("packaging/quorate.toml");
    for d in documented_keys() {
        let name = d.key.rsplit('.').next().unwrap();
        assert!(
            text.contains(&format!("{name} = {}", d.example)),
            "packaging/quorate.toml does not show {}",
            d.key
        );
    }
    let path = Path::new("/etc/quorate/quorate.toml");
    // As installed: refused, and the error says node_name is what is missing.
    match Config::parse(&text, path) {
        Err(ConfigError::Setting { key, .. }) => assert_eq!(key, "node_name"),
        other => panic!("the installed config should need a node_name, got {other:?}"),
    }
    // After the administrator sets it.
    let named = text.replacen(NODE_NAME_COMMENTED, "\nnode_name = \"gw-1\"\n", 1);
    assert_ne!(named, text);
    let config = Config::parse(&named, path).expect("the named config parses");
    assert_eq!(config.node_name, "gw-1");
    assert_eq!(
        config,
        Config::new("gw-1"),
        "the installed config must change no default"
    );
}

/// `[package.metadata.deb]` of Cargo.toml.
fn deb_metadata() -> toml::Table {
    let cargo: toml::Table = read("Cargo.toml").parse().expect("Cargo.toml parses");
    cargo
        .get("package")
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("deb"))
        .and_then(|d| d.as_table())
        .cloned()
        .expect("Cargo.toml has [package.metadata.deb]")
}

/// (source, installed path without the leading /, mode) of each deb asset;
/// a destination ending in / takes the source's file name.
fn deb_assets() -> Vec<(String, String, String)> {
    let meta = deb_metadata();
    meta["assets"]
        .as_array()
        .expect("assets is an array")
        .iter()
        .map(|a| {
            let a = a.as_array().expect("each asset is [source, dest, mode]");
            let s = |i: usize| a[i].as_str().unwrap().to_string();
            let (source, mut dest, mode) = (s(0), s(1), s(2));
            if dest.ends_with('/') {
                dest.push_str(source.rsplit('/').next().unwrap());
            }
            (source, dest, mode)
        })
        .collect()
}

/// Every file both packages must install.
const INSTALLED: [&str; 7] = [
    "usr/bin/quorated",
    "usr/bin/quorate",
    "lib/systemd/system/quorated.service",
    "usr/share/man/man8/quorate.8",
    "usr/share/man/man8/quorated.8",
    "usr/share/man/man5/quorate.toml.5",
    "etc/quorate/quorate.toml",
];

#[test]
fn deb_metadata_installs_everything() {
    let meta = deb_metadata();
    assert_eq!(meta["section"].as_str(), Some("admin"));
    assert!(meta["depends"].as_str().unwrap().contains("$auto"));
    assert!(!meta["maintainer"].as_str().unwrap().is_empty());
    let conf: Vec<&str> = meta["conf-files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(conf, ["/etc/quorate/quorate.toml"]);
    assert!(
        meta.get("systemd-units").is_none(),
        "cargo-deb's systemd-units enables the service by default; the package must enable nothing"
    );

    let assets = deb_assets();
    for dest in INSTALLED {
        assert!(
            assets.iter().any(|(_, d, _)| d == dest),
            "the .deb does not install /{dest}: {assets:?}"
        );
    }
    for (source, dest, mode) in &assets {
        // Binaries come from the release build; everything else is in the tree.
        if !source.starts_with("target/") {
            assert!(
                root().join(source).is_file(),
                "asset {source} does not exist"
            );
        }
        let expected = if dest.starts_with("usr/bin/") {
            "755"
        } else {
            "644"
        };
        assert_eq!(mode, expected, "mode of /{dest}");
    }
    // The unit runs the binary where the package puts it.
    let unit = read("systemd/quorated.service");
    assert!(unit.contains("ExecStart=/usr/bin/quorated "), "{unit}");
    assert!(unit.contains("User=quorate"), "{unit}");
}

/// A script without its comment lines.
fn code_lines(script: &str) -> String {
    script
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn maintainer_scripts_create_the_user_and_enable_nothing() {
    let meta = deb_metadata();
    let dir = meta["maintainer-scripts"].as_str().unwrap();
    let postinst = read(&format!("{dir}postinst"));
    let postrm = read(&format!("{dir}postrm"));
    for (name, script) in [("postinst", &postinst), ("postrm", &postrm)] {
        assert!(script.starts_with("#!/bin/sh\n"), "{name}: not a sh script");
        assert!(script.contains("\nset -e\n"), "{name}: no set -e");
        let status = Command::new("sh")
            .arg("-n")
            .arg(root().join(dir).join(name))
            .status()
            .expect("run sh -n");
        assert!(status.success(), "{name} is not valid sh");
        let code = code_lines(script);
        assert!(
            !code.contains("systemctl enable") && !code.contains("systemctl start"),
            "{name} must not enable or start anything"
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(root().join(dir).join(name))
                .unwrap()
                .permissions(),
        );
        assert!(mode & 0o111 != 0, "{name} is not executable");
    }
    assert!(postinst.contains(
        "adduser --system --quiet --group \\\n                    --home /var/lib/quorate --no-create-home quorate"
    ));
    assert!(postinst.contains("install -d -m 0750 -o quorate -g quorate /var/lib/quorate"));
    assert!(postinst.contains("systemctl daemon-reload"));
    // Data is never removed while it holds anything.
    assert!(!postrm.contains("rm -rf /var/lib/quorate\n"), "{postrm}");
    assert!(postrm.contains("purge)"));
}

#[test]
fn rpm_spec_installs_the_same_files() {
    let spec = read("packaging/rpm/quorate.spec");
    let cargo: toml::Table = read("Cargo.toml").parse().unwrap();
    let version = cargo["package"]["version"].as_str().unwrap();
    assert!(
        spec.contains(&format!("\nVersion:        {version}\n")),
        "the spec's Version is not Cargo.toml's {version}"
    );
    // The deb's paths, in the spec's macros.
    let macros = [
        ("usr/bin/", "%{_bindir}/"),
        ("lib/systemd/system/", "%{_unitdir}/"),
        ("usr/share/man/", "%{_mandir}/"),
        ("etc/", "%{_sysconfdir}/"),
    ];
    for dest in INSTALLED {
        let (prefix, mac) = macros.iter().find(|(p, _)| dest.starts_with(p)).unwrap();
        let path = format!("{mac}{}", &dest[prefix.len()..]);
        assert!(
            spec.contains(&format!("%{{buildroot}}{path}\n")),
            "the spec's %install does not install {path}"
        );
        let listed = spec.lines().any(|l| {
            let l = l.trim_end_matches('*');
            l.ends_with(&path) && !l.contains("buildroot")
        });
        assert!(listed, "the spec's %files does not list {path}");
    }
    for needle in [
        "%config(noreplace) %{_sysconfdir}/quorate/quorate.toml",
        "useradd -r",
        "%systemd_post quorated.service",
        "%systemd_preun quorated.service",
        "%systemd_postun quorated.service",
        "%dir %attr(0750,quorate,quorate) %{_localstatedir}/lib/quorate",
    ] {
        assert!(spec.contains(needle), "the spec lacks {needle:?}");
    }
    let start = spec.find("\n%pre\n").expect("the spec has %pre");
    let end = spec.find("\n%files\n").expect("the spec has %files");
    let scriptlets = code_lines(&spec[start..end]);
    assert!(
        !scriptlets.contains("systemctl enable") && !scriptlets.contains("systemctl start"),
        "the spec's scriptlets must enable nothing"
    );
}

/// Why the .deb cannot be built and installed here, if it cannot.
fn deb_install_unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("it installs a package with dpkg, which needs root".into());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let has = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has(&cargo, &["deb", "--version"]) {
        return Some("cargo-deb is not installed (cargo install --locked cargo-deb)".into());
    }
    if !has("dpkg", &["--version"]) {
        return Some("dpkg is not installed (not a Debian-based system)".into());
    }
    if !has("man", &["--version"]) {
        return Some("man-db is not installed (apt-get install man-db)".into());
    }
    None
}

fn run(program: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// The target directory of this test build (target/debug/deps/packaging-*).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.ancestors()
        .nth(3)
        .expect("the test runs from <target>/<profile>/deps")
        .to_path_buf()
}

#[test]
fn deb_builds_installs_and_removes_keeping_data() {
    if let Some(why) = deb_install_unavailable() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must build and install the .deb, but {why}; .ci/run should have set this up"
        );
        eprintln!("deb_builds_installs_and_removes_keeping_data did not run: {why}");
        return;
    }
    // Two runs at once on one machine would remove each other's package.
    let lock = std::fs::File::create(std::env::temp_dir().join("quorate-packaging-test.lock"))
        .expect("lock file");
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock");
    if installed("quorate") && std::env::var("CI").as_deref() != Ok("true") {
        eprintln!(
            "deb_builds_installs_and_removes_keeping_data did not run: a quorate package is \
             installed on this machine, and the test would replace and remove it"
        );
        return;
    }
    let data_existed = Path::new("/var/lib/quorate").exists();

    // A target directory of its own: the one `cargo test` uses is locked
    // while the tests run. It is kept, so a second run only relinks.
    let started = std::time::Instant::now();
    let out_dir = tempfile::tempdir().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let build = Command::new(&cargo)
        // --fast: xz's lighter level; it saves most of the packing time.
        .args(["deb", "--locked", "--fast", "--manifest-path"])
        .arg(root().join("Cargo.toml"))
        .arg("--output")
        .arg(out_dir.path())
        .env("CARGO_TARGET_DIR", target_dir().join("packaging"))
        .output()
        .expect("run cargo deb");
    assert!(
        build.status.success(),
        "cargo deb failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let debs: Vec<PathBuf> = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "expected one .deb: {debs:?}");
    eprintln!(
        "built {} in {:.0} s",
        debs[0].display(),
        started.elapsed().as_secs_f64()
    );

    run("dpkg", &["-i", debs[0].to_str().unwrap()]);
    let version = run("/usr/bin/quorate", &["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("quorate {}", env!("CARGO_PKG_VERSION"))
    );
    run("/usr/bin/quorated", &["--version"]);
    // Installed stripped: no DWARF section names left in the binaries, and
    // the symbols are in the dbgsym package next to the .deb.
    // (Section names: the bytes ".debug_info" are also a string inside
    // std's backtrace code.)
    for bin in ["/usr/bin/quorated", "/usr/bin/quorate"] {
        let sections = run("readelf", &["--section-headers", "--wide", bin]);
        let sections = String::from_utf8_lossy(&sections.stdout);
        assert!(
            sections.contains(".text") && !sections.contains(" .debug_info "),
            "{bin} still carries debug info:\n{sections}"
        );
    }
    let ddebs = std::fs::read_dir(out_dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "ddeb"))
        .count();
    assert_eq!(
        ddebs, 1,
        "expected the quorate-dbgsym .ddeb beside the .deb"
    );
    for (section, page) in [("8", "quorate"), ("8", "quorated"), ("5", "quorate.toml")] {
        let found = run("man", &["-w", section, page]);
        let path = String::from_utf8_lossy(&found.stdout);
        assert!(
            path.starts_with(&format!("/usr/share/man/man{section}/{page}.{section}")),
            "man -w {section} {page}: {path}"
        );
    }
    let unit = std::fs::read_to_string("/lib/systemd/system/quorated.service")
        .expect("the unit is installed");
    assert_eq!(unit, read("systemd/quorated.service"));
    assert_eq!(
        std::fs::read_to_string("/etc/quorate/quorate.toml").expect("the config is installed"),
        read("packaging/quorate.toml")
    );
    // postinst made the system user and its data directory, enabled nothing.
    run("getent", &["passwd", "quorate"]);
    let data = std::fs::metadata("/var/lib/quorate").expect("/var/lib/quorate exists");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&data.permissions()) & 0o777,
        0o750
    );
    assert!(
        !Path::new("/etc/systemd/system/multi-user.target.wants/quorated.service").exists(),
        "the package must not enable the service"
    );

    // Removing the package keeps what the node holds.
    let marker = Path::new("/var/lib/quorate/grastate.dat");
    std::fs::write(marker, "# a node's data\n").unwrap();
    run("dpkg", &["-r", "quorate"]);
    for gone in [
        "/usr/bin/quorate",
        "/usr/bin/quorated",
        "/lib/systemd/system/quorated.service",
        "/usr/share/man/man8/quorate.8.gz",
        "/usr/share/man/man8/quorate.8",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} is left after dpkg -r");
    }
    assert!(marker.exists(), "dpkg -r removed the node's data");
    assert!(
        Path::new("/etc/quorate/quorate.toml").exists(),
        "dpkg -r keeps the conffile (only purge removes it)"
    );
    // Purge removes the rest; the data directory and the user only when
    // the directory is empty (postrm keeps a node's database even then).
    if !data_existed {
        std::fs::remove_file(marker).unwrap();
    }
    run("dpkg", &["--purge", "quorate"]);
    assert!(!Path::new("/etc/quorate/quorate.toml").exists());
    if !data_existed {
        assert!(!Path::new("/var/lib/quorate").exists());
        let user = Command::new("getent").args(["passwd", "quorate"]).output();
        assert!(
            user.is_ok_and(|o| !o.status.success()),
            "purge left the quorate user"
        );
    }
    assert!(!installed("quorate"));
}
