//! How one hvparam value is typed, parsed from JSON and shown again.

use serde_json::Value as Json;

/// The value types Ganeti uses for KVM hvparams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `true` or `false`.
    Bool,
    /// A whole number.
    Int,
    /// A string; `""` means "unset" where the parameter is optional.
    String,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Bool => "a boolean",
            Kind::Int => "an integer",
            Kind::String => "a string",
        })
    }
}

/// Why a raw value could not become a typed hvparam.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParseFailure {
    /// The JSON type is wrong.
    WrongType { expected: Kind, found: String },
    /// A string outside the allowed set.
    NotInSet { value: String },
    /// `""` for a parameter that must be set.
    Required,
}

/// Describes a JSON value for an error message: its type and a short rendering.
pub(crate) fn describe(value: &Json) -> String {
    let shown = |v: &Json| {
        let s = v.to_string();
        if s.chars().count() > 40 {
            format!("{}…", s.chars().take(40).collect::<String>())
        } else {
            s
        }
    };
    match value {
        Json::Null => "null".to_owned(),
        Json::Bool(b) => format!("boolean {b}"),
        Json::Number(n) => format!("number {n}"),
        Json::String(_) => format!("string {}", shown(value)),
        Json::Array(_) => "an array".to_owned(),
        Json::Object(_) => "an object".to_owned(),
    }
}

/// A Rust type that can hold one hvparam.
pub(crate) trait ParamType: Sized {
    /// What a getter hands out.
    type Out<'a>
    where
        Self: 'a;
    const KIND: Kind;
    /// The allowed values of a set-valued parameter, in declared order.
    const ALLOWED: &'static [&'static str] = &[];
    /// Whether `""` is accepted (an optional set-valued parameter).
    const EMPTY_OK: bool = true;
    fn from_json(value: &Json) -> Result<Self, ParseFailure>;
    fn to_json(&self) -> Json;
    fn get(&self) -> Self::Out<'_>;
}

impl ParamType for bool {
    type Out<'a> = bool;
    const KIND: Kind = Kind::Bool;
    fn from_json(value: &Json) -> Result<Self, ParseFailure> {
        value.as_bool().ok_or_else(|| ParseFailure::WrongType {
            expected: Kind::Bool,
            found: describe(value),
        })
    }
    fn to_json(&self) -> Json {
        Json::Bool(*self)
    }
    fn get(&self) -> bool {
        *self
    }
}

impl ParamType for i64 {
    type Out<'a> = i64;
    const KIND: Kind = Kind::Int;
    fn from_json(value: &Json) -> Result<Self, ParseFailure> {
        value.as_i64().ok_or_else(|| ParseFailure::WrongType {
            expected: Kind::Int,
            found: describe(value),
        })
    }
    fn to_json(&self) -> Json {
        Json::from(*self)
    }
    fn get(&self) -> i64 {
        *self
    }
}

impl ParamType for String {
    type Out<'a> = &'a str;
    const KIND: Kind = Kind::String;
    fn from_json(value: &Json) -> Result<Self, ParseFailure> {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ParseFailure::WrongType {
                expected: Kind::String,
                found: describe(value),
            })
    }
    fn to_json(&self) -> Json {
        Json::String(self.clone())
    }
    fn get(&self) -> &str {
        self
    }
}

/// A closed set of string values.
pub(crate) trait StrEnum: Copy + 'static {
    const NAMES: &'static [&'static str];
    fn from_name(name: &str) -> Option<Self>;
    fn name(self) -> &'static str;
}

fn enum_from_json<E: StrEnum>(value: &Json) -> Result<Option<E>, ParseFailure> {
    let s = value.as_str().ok_or_else(|| ParseFailure::WrongType {
        expected: Kind::String,
        found: describe(value),
    })?;
    if s.is_empty() {
        return Ok(None);
    }
    E::from_name(s)
        .map(Some)
        .ok_or_else(|| ParseFailure::NotInSet {
            value: s.to_owned(),
        })
}

/// A required set-valued parameter.
pub(crate) struct Required<E>(pub(crate) E);

impl<E: StrEnum> ParamType for Required<E> {
    type Out<'a> = E;
    const KIND: Kind = Kind::String;
    const ALLOWED: &'static [&'static str] = E::NAMES;
    const EMPTY_OK: bool = false;
    fn from_json(value: &Json) -> Result<Self, ParseFailure> {
        enum_from_json(value)?
            .map(Required)
            .ok_or(ParseFailure::Required)
    }
    fn to_json(&self) -> Json {
        Json::String(self.0.name().to_owned())
    }
    fn get(&self) -> E {
        self.0
    }
}

impl<E: StrEnum> ParamType for Option<E> {
    type Out<'a> = Option<E>;
    const KIND: Kind = Kind::String;
    const ALLOWED: &'static [&'static str] = E::NAMES;
    fn from_json(value: &Json) -> Result<Self, ParseFailure> {
        enum_from_json(value)
    }
    fn to_json(&self) -> Json {
        Json::String(self.map(E::name).unwrap_or_default().to_owned())
    }
    fn get(&self) -> Option<E> {
        *self
    }
}

impl<E: PartialEq> PartialEq for Required<E> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl<E: Clone> Clone for Required<E> {
    fn clone(&self) -> Self {
        Required(self.0.clone())
    }
}
impl<E: std::fmt::Debug> std::fmt::Debug for Required<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Declares a closed set of string values as a Rust enum.
macro_rules! str_enum {
    ($(#[doc = $doc:literal])* $name:ident { $( $(#[doc = $vdoc:literal])* $variant:ident = $s:literal ),+ $(,)? }) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[doc = $vdoc])* #[doc = concat!("`", $s, "`")] $variant, )+
        }

        impl $name {
            /// Every value, in declared order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant ),+ ];

            /// The value as Ganeti spells it.
            pub fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $s, )+ }
            }
        }

        impl $crate::value::StrEnum for $name {
            const NAMES: &'static [&'static str] = &[ $( $s ),+ ];
            fn from_name(name: &str) -> Option<Self> {
                match name { $( $s => Some($name::$variant), )+ _ => None }
            }
            fn name(self) -> &'static str {
                self.as_str()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$name as $crate::value::StrEnum>::from_name(s).ok_or_else(|| $crate::UnknownValue {
                    value: s.to_owned(),
                    allowed: <$name as $crate::value::StrEnum>::NAMES,
                })
            }
        }
    };
}
pub(crate) use str_enum;
