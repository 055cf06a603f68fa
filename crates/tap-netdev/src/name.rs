//! Interface names.

use std::fmt;

use crate::error::{NameProblem, TapError};

/// The longest interface name Linux accepts, in bytes (`IFNAMSIZ - 1`).
pub const MAX_TAP_NAME_LEN: usize = 15;

/// A network interface name the kernel accepts: 1 to 15 bytes, not `.` or
/// `..`, and without `/`, `:`, whitespace or NUL (the rules of the kernel's
/// `dev_valid_name`).
///
/// It is a string, never bytes: a NIC script gets `tap0`, not Ganeti's
/// `b'tap0'`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TapName(String);

impl TapName {
    /// Checks `name` against the kernel's rules.
    ///
    /// ```
    /// use tap_netdev::{NameProblem, TapError, TapName};
    ///
    /// assert_eq!(TapName::new("gnt.com.0").unwrap().as_str(), "gnt.com.0");
    /// assert!(matches!(
    ///     TapName::new("a-name-of-16-byt"),
    ///     Err(TapError::InvalidName { problem: NameProblem::TooLong { len: 16 }, .. })
    /// ));
    /// ```
    pub fn new(name: &str) -> Result<TapName, TapError> {
        let problem = if name.is_empty() {
            Some(NameProblem::Empty)
        } else if name.len() > MAX_TAP_NAME_LEN {
            Some(NameProblem::TooLong { len: name.len() })
        } else if name == "." || name == ".." {
            Some(NameProblem::Dot)
        } else {
            name.chars()
                .find(|&c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
                .map(NameProblem::BadChar)
        };
        match problem {
            Some(problem) => Err(TapError::InvalidName {
                name: name.to_owned(),
                problem,
            }),
            None => Ok(TapName(name.to_owned())),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TapName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TapName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for TapName {
    type Err = TapError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TapName::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(name: &str) -> NameProblem {
        match TapName::new(name) {
            Err(TapError::InvalidName { problem, .. }) => problem,
            other => panic!("expected InvalidName, got {other:?}"),
        }
    }

    #[test]
    fn fifteen_bytes_is_accepted() {
        assert_eq!(
            TapName::new("abcdefghijklmno").unwrap().as_str(),
            "abcdefghijklmno"
        );
    }

    #[test]
    fn sixteen_bytes_is_too_long() {
        assert_eq!(
            problem("abcdefghijklmnop"),
            NameProblem::TooLong { len: 16 }
        );
    }

    #[test]
    fn length_counts_bytes_not_chars() {
        // 8 chars, 16 bytes.
        assert_eq!(problem("éééééééé"), NameProblem::TooLong { len: 16 });
    }

    #[test]
    fn empty_is_refused() {
        assert_eq!(problem(""), NameProblem::Empty);
    }

    #[test]
    fn dot_and_dotdot_are_refused() {
        assert_eq!(problem("."), NameProblem::Dot);
        assert_eq!(problem(".."), NameProblem::Dot);
    }

    #[test]
    fn slash_colon_space_nul_are_refused() {
        assert_eq!(problem("a/b"), NameProblem::BadChar('/'));
        assert_eq!(problem("eth0:1"), NameProblem::BadChar(':'));
        assert_eq!(problem("tap 0"), NameProblem::BadChar(' '));
        assert_eq!(problem("tap\0"), NameProblem::BadChar('\0'));
    }

    #[test]
    fn error_message_names_the_interface() {
        assert_eq!(
            TapName::new("abcdefghijklmnop").unwrap_err().to_string(),
            "invalid interface name `abcdefghijklmnop`: 16 bytes, at most 15 allowed"
        );
    }
}
