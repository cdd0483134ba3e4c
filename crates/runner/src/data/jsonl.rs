//! JSON Lines: one JSON object per non-blank line, text in `--text-field`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::text::utf8_error;
use super::{DataError, RawDoc};

pub(crate) struct JsonlReader {
    path: PathBuf,
    reader: BufReader<File>,
    field: String,
    buf: Vec<u8>,
    /// 1-based number of the line last read.
    line: usize,
    /// File offset of the start of the next line.
    offset: u64,
    done: bool,
}

impl JsonlReader {
    pub(crate) fn open(path: &Path, field: &str) -> Result<Self, DataError> {
        let f = File::open(path).map_err(|e| DataError::io(path, e))?;
        Ok(JsonlReader {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 20, f),
            field: field.to_string(),
            buf: Vec::new(),
            line: 0,
            offset: 0,
            done: false,
        })
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn keys_of(map: &serde_json::Map<String, Value>) -> String {
    map.keys()
        .map(|k| format!("{k:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl JsonlReader {
    fn read_one(&mut self) -> Option<Result<RawDoc, DataError>> {
        loop {
            self.buf.clear();
            let n = match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(n) => n,
                Err(e) => return Some(Err(DataError::io(&self.path, e))),
            };
            if n == 0 {
                return None;
            }
            self.line += 1;
            let start = self.offset;
            self.offset += n as u64;
            let line = match std::str::from_utf8(&self.buf) {
                Ok(s) => s,
                Err(e) => return Some(Err(utf8_error(&self.path, &self.buf, e, start, self.line))),
            };
            let trimmed = line.trim_matches(|c: char| c.is_ascii_whitespace());
            if trimmed.is_empty() {
                continue;
            }
            let value: Value = match serde_json::from_str(trimmed) {
                Ok(v) => v,
                Err(e) => {
                    let full = e.to_string();
                    let msg = match full.rfind(" at line ") {
                        Some(i) => format!("{} (column {})", &full[..i], e.column()),
                        None => full,
                    };
                    let hint = if trimmed.starts_with('[') {
                        "the file looks like a JSON array; convert it to JSON Lines, one object per line (jq -c '.[]' FILE)"
                    } else {
                        "each non-blank line must be exactly one JSON object (JSON Lines)"
                    };
                    return Some(Err(DataError::BadJson {
                        path: self.path.clone(),
                        line: self.line,
                        message: msg,
                        hint: hint.into(),
                    }));
                }
            };
            let bad = |problem: String, keys: String| DataError::BadTextField {
                path: self.path.clone(),
                line: self.line,
                problem,
                keys,
            };
            let Value::Object(mut map) = value else {
                return Some(Err(bad(
                    format!("line is a JSON {}, not an object", json_type(&value)),
                    String::new(),
                )));
            };
            return Some(match map.remove(&self.field) {
                Some(Value::String(text)) => Ok(RawDoc {
                    source: format!("{}:{}", self.path.display(), self.line),
                    text,
                }),
                Some(other) => {
                    let problem = format!(
                        "field {:?} is a {}, not a string",
                        self.field,
                        json_type(&other)
                    );
                    map.insert(self.field.clone(), other);
                    Err(bad(problem, keys_of(&map)))
                }
                None => Err(bad(
                    format!("missing field {:?}", self.field),
                    keys_of(&map),
                )),
            });
        }
    }
}

impl Iterator for JsonlReader {
    type Item = Result<RawDoc, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.read_one();
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
        }
        r
    }
}
