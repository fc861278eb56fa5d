//! `systemd-analyze verify` accepts the unit (with the built binary and the
//! man pages standing in for the installed ones), and it keeps the settings
//! the product relies on.

mod common;

use std::process::Command;

#[test]
fn unit_verifies_and_has_the_required_settings() {
    let unit = common::read(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/quorated.service"
    )));
    for required in [
        "Type=notify",
        "After=network-online.target",
        "Wants=network-online.target",
        "WantedBy=multi-user.target",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "User=quorate",
        "StateDirectory=quorate",
        "RuntimeDirectory=quorate",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == required),
            "the unit lacks `{required}`"
        );
    }

    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: systemd-analyze is not installed (.ci/run installs systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man");
    for (section, page) in [
        ("man8", "quorate.8"),
        ("man8", "quorated.8"),
        ("man5", "quorate.toml.5"),
    ] {
        std::fs::create_dir_all(man.join(section)).unwrap();
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/man/").to_string() + page,
            man.join(section).join(page),
        )
        .unwrap();
    }
    let local = unit.replace("/usr/bin/quorated", common::QUORATED);
    let path = dir.path().join("quorated.service");
    std::fs::write(&path, local).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .env("MANPATH", &man)
        .output()
        .unwrap();
    let text = format!("{}{}", common::stdout(&out), common::stderr(&out));
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{text}"
    );
    let complaints: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("quorated.service"))
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify complains:\n{text}"
    );
}
