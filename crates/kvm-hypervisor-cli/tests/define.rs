//! Defined instances without QEMU: define, list --all, autostart, edit,
//! undefine. (`node-start`/`node-stop` with real guests: `cargo xtask e2e`.)
#![allow(clippy::disallowed_methods)] // a test driver runs the binary under test

use std::path::PathBuf;
use std::process::{Command, Output};

struct Dirs {
    root: PathBuf,
}

impl Dirs {
    fn new(test: &str) -> Dirs {
        let root = std::env::temp_dir().join(format!("kvmhv-define-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&root).expect("temp dir");
        Dirs { root }
    }

    fn config(&self) -> PathBuf {
        self.root.join("instances")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kvm-hypervisor"));
        c.arg("--run-dir")
            .arg(self.root.join("run"))
            .arg("--config-dir")
            .arg(self.config())
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("the binary runs")
    }

    /// `edit NAME` with `editor` as $EDITOR (and no $VISUAL).
    fn edit(&self, name: &str, editor: &str) -> Output {
        self.command(&["edit", name])
            .env_remove("VISUAL")
            .env("EDITOR", editor)
            .output()
            .expect("the binary runs")
    }

    fn spec(&self, file: &str, body: &str) -> String {
        let path = self.root.join(file);
        std::fs::write(&path, body).expect("spec");
        path.display().to_string()
    }

    fn stored(&self, name: &str) -> serde_json::Value {
        let text =
            std::fs::read_to_string(self.config().join(format!("{name}.json"))).expect("stored");
        serde_json::from_str(&text).expect("JSON")
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const WEB: &str = r#"{"name": "web1", "memory": 256, "vcpus": 1,
  "hvparams": {"kernel_path": ""},
  "nics": [{"mode": "bridged", "link": "br0"}]}"#;

#[test]
fn define_writes_generated_values_in_once_and_refuses_a_second_define() {
    let d = Dirs::new("define");
    let spec = d.spec("web1.json", WEB);
    let out = d.run(&["define", &spec, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let generated: Vec<String> = report["generated"]
        .as_array()
        .expect("generated")
        .iter()
        .map(|g| {
            g.as_str()
                .unwrap_or_default()
                .split(" = ")
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(generated, ["uuid", "nics[0].uuid", "nics[0].mac"]);
    // Defined all the same, with what would stop its start said now.
    let host: Vec<&str> = report["host_problems"]
        .as_array()
        .expect("host_problems")
        .iter()
        .filter_map(|h| h.as_str())
        .collect();
    assert!(
        host.contains(&"nics[0].link: bridge `br0` does not exist on this host"),
        "{host:?}"
    );
    let stored = d.stored("web1");
    let (uuid, mac) = (stored["uuid"].clone(), stored["nics"][0]["mac"].clone());
    assert!(uuid.is_string() && mac.is_string(), "{stored}");
    // The same values on every load: `validate` of the stored spec
    // generates nothing.
    let path = d.config().join("web1.json");
    let out = d.run(&["validate", path.to_str().expect("utf-8"), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["generated"], serde_json::json!([]), "{v}");
    let out = d.run(&["define", &spec]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out).1,
        "Error: web1 is defined already (--replace replaces its definition)\n"
    );
    assert_eq!(
        d.run(&["define", &spec, "--replace"]).status.code(),
        Some(0)
    );
    assert_ne!(
        d.stored("web1")["uuid"],
        uuid,
        "a replaced definition is the new spec"
    );
}

#[test]
fn an_invalid_spec_is_not_defined() {
    let d = Dirs::new("invalid");
    let spec = d.spec("bad.json", r#"{"name": "bad", "memory": "lots"}"#);
    let out = d.run(&["define", &spec]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out)
            .1
            .starts_with(&format!("Error: {spec}: invalid instance spec: ")),
        "{out:?}"
    );
    assert!(!d.config().join("bad.json").exists());
}

#[test]
fn list_all_shows_definitions_with_their_autostart_order() {
    let d = Dirs::new("list");
    for name in ["b-web", "a-db", "c-cache"] {
        let spec = d.spec(
            &format!("{name}.json"),
            &format!(r#"{{"name": "{name}", "memory": 128, "vcpus": 1, "hvparams": {{"kernel_path": ""}}}}"#),
        );
        assert_eq!(d.run(&["define", &spec]).status.code(), Some(0));
    }
    assert_eq!(
        d.run(&["autostart", "b-web", "on", "--order", "2"])
            .status
            .code(),
        Some(0)
    );
    let out = d.run(&["autostart", "a-db", "on", "--json"]);
    assert_eq!(
        text(&out).0,
        "{\n  \"name\": \"a-db\",\n  \"autostart\": 0\n}\n"
    );
    let out = d.run(&["list", "--all"]);
    assert_eq!(
        text(&out).0,
        "NAME    STATE   PID MEMORY VCPUS AUTOSTART\n\
         a-db    stopped   -      -     - on (0)\n\
         b-web   stopped   -      -     - on (2)\n\
         c-cache stopped   -      -     - off\n"
    );
    assert_eq!(d.run(&["autostart", "b-web", "off"]).status.code(), Some(0));
    let out = d.run(&["list", "--all", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let autostart: Vec<&serde_json::Value> = rows
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| &r["autostart"])
        .collect();
    assert_eq!(
        autostart,
        [
            &serde_json::json!(0),
            &serde_json::Value::Null,
            &serde_json::Value::Null
        ]
    );
    let out = d.run(&["autostart", "nosuch", "on"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out).1, "Error: nosuch is not defined\n");
}

#[test]
fn edit_saves_a_valid_change_and_keeps_an_invalid_one_aside() {
    let d = Dirs::new("edit");
    let spec = d.spec("web1.json", WEB);
    assert_eq!(d.run(&["define", &spec]).status.code(), Some(0));
    let uuid = d.stored("web1")["uuid"].clone();
    let out = d.edit("web1", r#"sed -i 's/"memory": 256/"memory": 512/'"#);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out).0, "web1: definition saved\n");
    let stored = d.stored("web1");
    assert_eq!(
        (stored["memory"].clone(), stored["uuid"].clone()),
        (serde_json::json!(512), uuid)
    );
    let out = d.edit("web1", r#"sed -i 's/"memory": 512/"memory": -1/'"#);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out).1;
    assert!(
        err.starts_with("Error: web1: invalid instance spec: memory: "),
        "{err}"
    );
    let kept = err
        .lines()
        .last()
        .unwrap_or_default()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        err.contains("nothing changed; the edit is kept in "),
        "{err}"
    );
    assert!(std::fs::read_to_string(&kept).expect("kept").contains("-1"));
    let _ = std::fs::remove_file(&kept);
    assert_eq!(d.stored("web1")["memory"], 512);
}

#[test]
fn undefine_forgets_and_start_of_an_unknown_name_is_no_such_instance() {
    let d = Dirs::new("undefine");
    let spec = d.spec("web1.json", WEB);
    assert_eq!(d.run(&["define", &spec]).status.code(), Some(0));
    assert_eq!(d.run(&["autostart", "web1", "on"]).status.code(), Some(0));
    let out = d.run(&["undefine", "web1"]);
    assert_eq!(
        (out.status.code(), text(&out).0),
        (Some(0), "web1: undefined\n".to_owned())
    );
    assert_eq!(std::fs::read_dir(d.config()).expect("dir").count(), 0);
    let out = d.run(&["start", "web1"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out).1, "Error: web1 is not defined\n");
    assert_eq!(d.run(&["undefine", "web1"]).status.code(), Some(3));
}
