//! `scripts/bench --quick` still runs end to end on a tiny input and prints every figure of
//! issue 12 as a row with a ratio (or says why it skipped it). The numbers themselves are not
//! asserted: speed targets are never timed assertions.

use std::process::Command;

#[test]
fn bench_quick_prints_every_figure_with_a_ratio() {
    let output = Command::new(testkit::repo().join("scripts/bench"))
        .arg("--quick")
        .arg("--mailbake")
        .arg(env!("CARGO_BIN_EXE_mailbake"))
        .output()
        .expect("scripts/bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "scripts/bench --quick failed:\n{stdout}\n{stderr}"
    );
    let row = |figure: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(figure))
            .unwrap_or_else(|| panic!("no row `{figure}` in:\n{stdout}\n{stderr}"))
            .to_string()
    };
    // Measured rows: a number with a unit on both sides, a ratio and a verdict.
    for figure in [
        "warm build, 1 host",
        "warm build, 3 hosts",
        "cold build, 1 host",
        "messages/s, image config vs default",
        "messages/s, /bin/true hook vs default",
    ] {
        let line = row(figure);
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 6, "{line}");
        for cell in &cells[1..3] {
            let number = cell.trim_end_matches("/s").trim_end_matches('s');
            assert!(
                number.parse::<f64>().is_ok_and(|n| n > 0.0),
                "`{cell}` is not a positive measurement in: {line}"
            );
        }
        assert!(
            cells[3]
                .strip_suffix('x')
                .is_some_and(|r| r.parse::<f64>().is_ok()),
            "no ratio in: {line}"
        );
    }
    for figure in ["mailbake image", "boot to SMTP banner (TCG)"] {
        assert!(row(figure).contains("skipped (--quick)"), "{}", row(figure));
    }
    // The warm build really was warm, else the figure measures the wrong thing.
    assert!(!stdout.contains("did not reuse"), "{stdout}");
    assert!(stdout.contains("commands:"), "{stdout}");
}
