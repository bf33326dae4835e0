//! chasquid.conf as the shipped chasquid reads it: every field mailbake writes is one
//! chasquid 1.19 knows (unknown fields are fatal at start-up) and is read back with the value
//! the site file gave, as `chasquid-util print-config` shows; the monitoring server listens
//! where the site says.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The example site with `chasquid` appended as its `chasquid:` section, built with a fresh
/// secrets store; returns the unpacked overlay's root.
fn overlay_with(dir: &Path, chasquid: &str) -> PathBuf {
    let example = std::fs::read_to_string(testkit::example_site()).expect("example site");
    assert!(
        !example.contains("\nchasquid:"),
        "the example sets no chasquid: section"
    );
    let site = dir.join("site.yaml");
    std::fs::write(&site, format!("{example}\nchasquid:\n{chasquid}")).expect("write site");
    testkit::built_overlay(dir, &site).root
}

/// `field: value` lines of a protobuf text file (comments and blank lines skipped); repeated
/// fields keep every value in order.
fn fields(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("not a `field: value` line: {line:?}"));
        map.entry(key.trim().to_string())
            .or_default()
            .push(value.trim().to_string());
    }
    map
}

/// What the shipped chasquid makes of the configuration directory, defaults merged in.
fn print_config(config_dir: &Path) -> BTreeMap<String, Vec<String>> {
    let out = testkit::run(
        Command::new(testkit::chasquid_util())
            .arg(format!("-C={}", config_dir.display()))
            .arg("print-config"),
    );
    fields(&out)
}

/// Asserts that every field of the generated chasquid.conf is read back as written.
fn assert_read_back_as_written(config_dir: &Path) -> BTreeMap<String, Vec<String>> {
    let written =
        fields(&std::fs::read_to_string(config_dir.join("chasquid.conf")).expect("chasquid.conf"));
    let read = print_config(config_dir);
    for (key, values) in &written {
        assert_eq!(
            read.get(key),
            Some(values),
            "chasquid reads `{key}` differently from what mailbake wrote\nwritten: {written:#?}\nread: {read:#?}"
        );
    }
    read
}

fn one<'a>(config: &'a BTreeMap<String, Vec<String>>, key: &str) -> Option<&'a str> {
    config.get(key).map(|v| {
        assert_eq!(v.len(), 1, "{key} once: {v:?}");
        v[0].as_str()
    })
}

#[test]
fn site_chasquid_settings_reach_chasquid_as_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = overlay_with(
        dir.path(),
        "  max_data_size_mb: 20\n  max_queue_items: 500\n  give_up_send_after: 1h30m\n  \
         monitoring_address: \"[::1]:1099\"\n",
    );
    let read = assert_read_back_as_written(&root.join("etc/chasquid"));
    assert_eq!(one(&read, "max_data_size_mb"), Some("20"));
    assert_eq!(one(&read, "max_queue_items"), Some("500"));
    assert_eq!(one(&read, "give_up_send_after"), Some("\"1h30m\""));
    assert_eq!(one(&read, "monitoring_address"), Some("\"[::1]:1099\""));
    assert_eq!(one(&read, "data_dir"), Some("\"/var/lib/chasquid\""));
    assert_eq!(one(&read, "mail_log_path"), Some("\"<syslog>\""));
    // Listening stays with systemd's sockets.
    assert_eq!(one(&read, "smtp_address"), Some("\"systemd\""));
}

#[test]
fn without_settings_chasquid_runs_with_its_defaults_and_no_monitoring() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = testkit::built_overlay(dir.path(), &testkit::example_site()).root;
    let read = assert_read_back_as_written(&root.join("etc/chasquid"));
    assert_eq!(one(&read, "max_data_size_mb"), Some("50"));
    assert_eq!(one(&read, "max_queue_items"), Some("200"));
    assert_eq!(one(&read, "give_up_send_after"), Some("\"20h\""));
    assert_eq!(one(&read, "monitoring_address"), None, "{read:#?}");
}

/// One HTTP/1.0 GET; returns the status line and the body.
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to monitoring");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

#[test]
fn the_monitoring_server_answers_on_the_configured_loopback_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reserved = testkit::reserve_port();
    let port = reserved.number();
    let root = overlay_with(
        dir.path(),
        &format!("  monitoring_address: \"127.0.0.1:{port}\"\n"),
    );
    let config_dir = root.join("etc/chasquid");
    testkit::throwaway_certificate(&config_dir, "smtp.example.com");
    let chasquid = testkit::Chasquid::start(&root, &dir.path().join("state"), "smtp.example.com");

    // The server starts with the SMTP listeners; give it a bounded moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port}; chasquid's log:\n{}",
            chasquid.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = http_get(port, "/metrics");
    assert!(status.contains(" 200 "), "{status}\n{body}");
    // OpenMetrics (strict since 1.18): counters from chasquid itself, and the end marker.
    assert!(body.contains("chasquid_"), "{body}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    // Why it must stay on loopback: the queue, with every sender and recipient.
    let (status, body) = http_get(port, "/debug/queue");
    assert!(status.contains(" 200 "), "{status}\n{body}");
    assert!(body.contains("# Queue status"), "{body}");
}
