//! Serde helpers so aggregate checkpoints survive non-finite values.
//!
//! `serde_json` writes NaN/±inf as `null` and then refuses to read `null`
//! back into an `f64`, so a checkpoint holding e.g. an infinite NLL (target
//! logit `-inf`) or an infinite KL could be written but never resumed. For
//! human-readable formats we therefore write non-finite values as the
//! strings `"nan"`, `"inf"`, `"-inf"` and accept those (and `null` → NaN)
//! when reading; binary formats use their native `f64` encoding.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// `f64` with the lenient encoding described in the module docs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LenientF64(pub f64);

impl Serialize for LenientF64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let x = self.0;
        if x.is_finite() || !s.is_human_readable() {
            s.serialize_f64(x)
        } else if x.is_nan() {
            s.serialize_str("nan")
        } else if x > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }
}

struct LenientVisitor;

impl Visitor<'_> for LenientVisitor {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, null, or one of \"nan\", \"inf\", \"-inf\"")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_unit<E: de::Error>(self) -> Result<f64, E> {
        Ok(f64::NAN)
    }
    fn visit_none<E: de::Error>(self) -> Result<f64, E> {
        Ok(f64::NAN)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        match v {
            "nan" | "NaN" => Ok(f64::NAN),
            "inf" | "+inf" | "Infinity" => Ok(f64::INFINITY),
            "-inf" | "-Infinity" => Ok(f64::NEG_INFINITY),
            other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
        }
    }
}

impl<'de> Deserialize<'de> for LenientF64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            d.deserialize_any(LenientVisitor).map(LenientF64)
        } else {
            f64::deserialize(d).map(LenientF64)
        }
    }
}

/// `#[serde(with = "crate::serde_f64::scalar")]` for an `f64` field.
pub(crate) mod scalar {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        LenientF64(*x).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        LenientF64::deserialize(d).map(|x| x.0)
    }
}

/// `[f64; 2]` (confidence intervals) read leniently, for summaries read back (`null` → NaN).
pub(crate) mod pair {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[f64; 2], D::Error> {
        let [a, b] = <[LenientF64; 2]>::deserialize(d)?;
        Ok([a.0, b.0])
    }
}

/// `#[serde(with = "crate::serde_f64::vec")]` for a `Vec<f64>` field.
pub(crate) mod vec {
    use super::*;
    use serde::ser::SerializeSeq;

    pub(crate) fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for &x in v {
            seq.serialize_element(&LenientF64(x))?;
        }
        seq.end()
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Vec::<LenientF64>::deserialize(d).map(|v| v.into_iter().map(|x| x.0).collect())
    }
}
