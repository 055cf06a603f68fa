//! QEMU's `key=value` option notation, with correct escaping.

use std::fmt;

/// One option value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptValue {
    /// A string; commas are doubled when rendered.
    Str(String),
    /// A boolean, rendered in the long form `on`/`off`.
    Bool(bool),
    /// An integer.
    Int(i64),
}

impl fmt::Display for OptValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptValue::Str(s) => f.write_str(&escape(s)),
            OptValue::Bool(b) => f.write_str(if *b { "on" } else { "off" }),
            OptValue::Int(i) => write!(f, "{i}"),
        }
    }
}

impl From<&str> for OptValue {
    fn from(s: &str) -> Self {
        OptValue::Str(s.to_owned())
    }
}
impl From<String> for OptValue {
    fn from(s: String) -> Self {
        OptValue::Str(s)
    }
}
impl From<&String> for OptValue {
    fn from(s: &String) -> Self {
        OptValue::Str(s.clone())
    }
}
impl From<bool> for OptValue {
    fn from(b: bool) -> Self {
        OptValue::Bool(b)
    }
}
impl From<i64> for OptValue {
    fn from(i: i64) -> Self {
        OptValue::Int(i)
    }
}
impl From<i32> for OptValue {
    fn from(i: i32) -> Self {
        OptValue::Int(i64::from(i))
    }
}
impl From<u32> for OptValue {
    fn from(i: u32) -> Self {
        OptValue::Int(i64::from(i))
    }
}
impl From<u16> for OptValue {
    fn from(i: u16) -> Self {
        OptValue::Int(i64::from(i))
    }
}
impl From<u8> for OptValue {
    fn from(i: u8) -> Self {
        OptValue::Int(i64::from(i))
    }
}

/// Doubles every `,` so QEMU reads it as part of the value.
pub fn escape(s: &str) -> String {
    s.replace(',', ",,")
}

/// An option list: an optional leading positional value (a device driver,
/// a chardev backend) and `key=value` pairs, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Opts {
    head: Option<String>,
    pairs: Vec<(String, OptValue)>,
}

impl Opts {
    /// Options led by a positional value, e.g. `virtio-blk-pci`.
    pub fn new(head: &str) -> Opts {
        Opts {
            head: Some(head.to_owned()),
            pairs: Vec::new(),
        }
    }

    /// Options with no positional value.
    pub fn pairs() -> Opts {
        Opts::default()
    }

    /// Adds `key=value`.
    pub fn set(mut self, key: &str, value: impl Into<OptValue>) -> Opts {
        self.pairs.push((key.to_owned(), value.into()));
        self
    }

    /// Adds `key=value` when `value` is `Some`.
    pub fn set_opt(self, key: &str, value: Option<impl Into<OptValue>>) -> Opts {
        match value {
            Some(v) => self.set(key, v),
            None => self,
        }
    }

    /// Adds `key=value` in place.
    pub fn push(&mut self, key: &str, value: impl Into<OptValue>) {
        self.pairs.push((key.to_owned(), value.into()));
    }

    /// The positional head.
    pub fn head(&self) -> Option<&str> {
        self.head.as_deref()
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&OptValue> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &OptValue)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl fmt::Display for Opts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        if let Some(h) = &self.head {
            f.write_str(&escape(h))?;
            first = false;
        }
        for (k, v) in &self.pairs {
            if !first {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
            first = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_in_values_are_doubled() {
        let o = Opts::pairs().set("file.filename", "/srv/a,b.img");
        assert_eq!(o.to_string(), "file.filename=/srv/a,,b.img");
    }

    #[test]
    fn booleans_are_long_form() {
        let o = Opts::new("socket").set("server", true).set("wait", false);
        assert_eq!(o.to_string(), "socket,server=on,wait=off");
    }

    #[test]
    fn head_alone_renders_alone() {
        assert_eq!(
            Opts::new("virtio-balloon-pci").to_string(),
            "virtio-balloon-pci"
        );
    }
}
