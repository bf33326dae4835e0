//! Errors quote bytes from their input (a path inside an archive, a value); what reaches the
//! terminal is escaped and bounded, whatever the input holds.

use std::process::Command;
// Linked for its watchdog, which bounds every test (tests/support/src/watchdog.rs).
use testkit as _;

#[test]
fn a_garbage_archive_never_sends_raw_control_bytes_to_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let evil = dir.path().join("evil.tar");
    // An archive whose member name holds terminal escape sequences (and climbs out).
    let made = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(
            "import io, sys, tarfile\n\
             t = tarfile.open(sys.argv[1], 'w', format=tarfile.GNU_FORMAT)\n\
             i = tarfile.TarInfo('\\x1b[31mred\\x07\\x1b]0;title\\x07/../../etc/x'); i.size = 3\n\
             t.addfile(i, io.BytesIO(b'abc')); t.close()\n",
        )
        .arg(&evil)
        .status()
        .unwrap();
    assert!(made.success());
    let digest = Command::new("sha256sum").arg(&evil).output().unwrap();
    let digest = String::from_utf8_lossy(&digest.stdout)[..64].to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_mailbake"))
        .arg("image")
        .arg("--base")
        .arg(&evil)
        .args(["--base-sha256", &digest, "--overlay"])
        .arg(&evil)
        .arg("--out")
        .arg(dir.path().join("x.qcow2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !out.stderr.iter().any(|b| *b == 0x1b || *b == 0x07),
        "raw control bytes on stderr: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\\u{1b}[31mred\\u{7}"), "{stderr}");
}

/// `mailbake ARGS…` with `env` set, in `dir`, stopped (and failed) after 60 s: a refusal
/// must come at once, never after a hang (a FIFO opened for reading waits for a writer).
fn refused_at_once(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    use std::time::{Duration, Instant};
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailbake"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mailbake starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reap");
            panic!(
                "mailbake {args:?} still ran after 60 s:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// A command line, its environment and a fragment its refusal must hold.
type Row = (Vec<String>, Vec<(&'static str, &'static str)>, &'static str);

/// Command-line values that were accepted and then went wrong (or hung), and values whose
/// error did not say what was wrong: each is refused at once, naming the value and the fix.
#[test]
fn bad_command_line_values_are_refused_at_once_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let site = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/example.com/site.yaml"
    );
    let fifo = dir.path().join("image.qcow2");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let fifo = fifo.display().to_string();
    let url = "https://images.example.com/mailbake/";
    let digest = "0".repeat(64);
    let terraform = |base_url: &str| {
        let image = [
            "--image",
            &fifo,
            "--image-base-url",
            base_url,
            "--out",
            "tf",
        ];
        let mut args = vec!["terraform".to_string(), site.to_string()];
        args.extend(image.iter().map(|a| a.to_string()));
        args
    };
    let words = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let no_env = Vec::new;
    let empty_epoch = || vec![("SOURCE_DATE_EPOCH", "")];
    let rows: Vec<Row> = vec![
        (terraform(url), no_env(), "is not a regular file"),
        (
            terraform("https://ops:s3cret@images.example.com/"),
            no_env(),
            "holds user information",
        ),
        (terraform("https://bücher.example/"), no_env(), "not ASCII"),
        (
            terraform("https://-x/"),
            no_env(),
            "starting with a letter or digit",
        ),
        (
            words(&["build", site, "--out", "out"]),
            empty_epoch(),
            "it is empty (SOURCE_DATE_EPOCH set to nothing?)",
        ),
        (
            words(&[
                "build",
                site,
                "--out",
                "out",
                "--source-date-epoch",
                "99999999999999",
            ]),
            no_env(),
            "after the year 2242",
        ),
        (
            words(&[
                "image",
                "--base",
                "b",
                "--base-sha256",
                &digest,
                "--overlay",
                "o",
                "--out",
                "x",
            ]),
            empty_epoch(),
            "it is empty",
        ),
        (
            words(&["verify", site, "--resolver", "127.0.0.1:0"]),
            no_env(),
            "`127.0.0.1:0` has port 0",
        ),
        (
            words(&["boot", "--image", "x.qcow2", "--forward-base", "0"]),
            no_env(),
            "from 1 to 65532",
        ),
        (
            words(&["boot", "--image", "x.qcow2", "--forward-base", "65533"]),
            no_env(),
            "from 1 to 65532",
        ),
    ];
    for (args, env, expect) in &rows {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, text) = refused_at_once(dir.path(), &args, env);
        assert!(
            matches!(code, Some(1 | 2)),
            "mailbake {args:?} exited {code:?}:\n{text}"
        );
        assert!(
            text.contains(expect),
            "mailbake {args:?}: expected `{expect}` in:\n{text}"
        );
        assert!(
            !text.contains("s3cret"),
            "the password was printed:\n{text}"
        );
        assert!(
            !text.bytes().any(|b| b < 0x20 && b != b'\n'),
            "control bytes in:\n{text:?}"
        );
    }
    assert!(!dir.path().join("tf").exists() && !dir.path().join("out").exists());
}
