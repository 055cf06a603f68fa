//! Keeping secrets out of logs.
//!
//! Commands are logged at debug level with their arguments, and raw lines at
//! trace level. For commands that carry a secret, both renderings go through
//! [`LoggedArguments`], which replaces the secret members.

use std::fmt;

use serde_json::Value;

/// What replaces a secret in logs.
pub(crate) const REDACTED: &str = "<redacted>";

/// The argument members holding a secret, per command.
fn secret_members(command: &str, arguments: &Value) -> &'static [&'static str] {
    match command {
        "set_password" | "change-vnc-password" => &["password"],
        "object-add" if arguments.get("qom-type").and_then(Value::as_str) == Some("secret") => {
            &["data"]
        }
        _ => &[],
    }
}

/// Whether a command's arguments may carry a secret.
pub(crate) fn may_carry_secret(command: &str) -> bool {
    matches!(
        command,
        "set_password" | "change-vnc-password" | "object-add"
    )
}

/// Arguments of a command (serialised JSON) rendered for a log line, with
/// secrets replaced by `<redacted>`.
pub(crate) struct LoggedArguments<'a> {
    pub(crate) command: &'a str,
    pub(crate) json: &'a [u8],
}

impl fmt::Display for LoggedArguments<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !may_carry_secret(self.command) {
            return f.write_str(&String::from_utf8_lossy(self.json));
        }
        let Ok(mut value) = serde_json::from_slice::<Value>(self.json) else {
            return f.write_str(REDACTED);
        };
        let members = secret_members(self.command, &value);
        if let Value::Object(map) = &mut value {
            for member in members {
                if let Some(v) = map.get_mut(*member) {
                    *v = Value::String(REDACTED.to_owned());
                }
            }
        }
        write!(f, "{value}")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn render(command: &str, args: &Value) -> Value {
        let json = serde_json::to_vec(args).unwrap();
        let shown = LoggedArguments {
            command,
            json: &json,
        }
        .to_string();
        serde_json::from_str(&shown).unwrap()
    }

    #[test]
    fn set_password_password_is_redacted() {
        let shown = render(
            "set_password",
            &json!({"protocol": "vnc", "password": "hunter2"}),
        );
        assert_eq!(shown, json!({"protocol": "vnc", "password": "<redacted>"}));
    }

    #[test]
    fn secret_object_data_is_redacted() {
        let shown = render(
            "object-add",
            &json!({"qom-type": "secret", "id": "s0", "data": "hunter2"}),
        );
        assert_eq!(
            shown,
            json!({"qom-type": "secret", "id": "s0", "data": "<redacted>"})
        );
    }

    #[test]
    fn other_objects_are_shown() {
        let args = json!({"qom-type": "iothread", "id": "io0"});
        assert_eq!(render("object-add", &args), args);
    }

    #[test]
    fn ordinary_arguments_are_shown_verbatim() {
        let shown = LoggedArguments {
            command: "device_del",
            json: br#"{"id":"disk-1"}"#,
        }
        .to_string();
        assert_eq!(shown, r#"{"id":"disk-1"}"#);
    }

    #[test]
    fn unparsable_secret_arguments_are_fully_redacted() {
        let shown = LoggedArguments {
            command: "set_password",
            json: b"{\"password\":\"hunter2",
        }
        .to_string();
        assert_eq!(shown, "<redacted>");
    }
}
