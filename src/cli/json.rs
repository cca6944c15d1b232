//! A JSON writer whose output matches Python's `json.dumps` defaults
//! (`ensure_ascii=True`, `", "` and `": "` separators), so manifests compare
//! byte for byte with the reference ones.

use std::fmt::Write;

/// Appends `s` as a JSON string literal.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Decodes bytes like Python's `decode('utf-8', 'backslashreplace')`: valid
/// UTF-8 as text, every byte of an invalid sequence as `\xNN`. The flag
/// says whether all bytes were valid.
pub fn backslash_replace(bytes: &[u8]) -> (String, bool) {
    let mut s = String::with_capacity(bytes.len());
    let mut valid = true;
    for chunk in bytes.utf8_chunks() {
        s.push_str(chunk.valid());
        for b in chunk.invalid() {
            valid = false;
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    (s, valid)
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Builds one JSON object field by field, in insertion order.
#[derive(Debug, Default)]
pub struct Object {
    buf: String,
}

impl Object {
    /// Starts an object.
    pub fn new() -> Self {
        Self {
            buf: String::from("{"),
        }
    }

    fn key(&mut self, k: &str) {
        if self.buf.len() > 1 {
            self.buf.push_str(", ");
        }
        push_str(&mut self.buf, k);
        self.buf.push_str(": ");
    }

    /// A string field.
    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        push_str(&mut self.buf, v);
        self
    }

    /// An integer field.
    pub fn int(&mut self, k: &str, v: impl std::fmt::Display) -> &mut Self {
        self.key(k);
        let _ = write!(self.buf, "{v}");
        self
    }

    /// A nested object of string values, in the given order.
    pub fn map(&mut self, k: &str, entries: &[(String, String)]) -> &mut Self {
        self.key(k);
        self.buf.push('{');
        for (i, (name, val)) in entries.iter().enumerate() {
            if i > 0 {
                self.buf.push_str(", ");
            }
            push_str(&mut self.buf, name);
            self.buf.push_str(": ");
            push_str(&mut self.buf, val);
        }
        self.buf.push('}');
        self
    }

    /// Finishes the object.
    pub fn finish(mut self) -> String {
        self.buf.push('}');
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_push_str_matches_python_ensure_ascii() {
        let cases: &[(&str, &str)] = &[
            ("plain", "\"plain\""),
            ("a\u{1}", "\"a\\u0001\""),
            ("q\"b\\", "\"q\\\"b\\\\\""),
            ("\u{7f}", "\"\\u007f\""),
            ("é", "\"\\u00e9\""),
            ("😀", "\"\\ud83d\\ude00\""),
            ("\n\t\u{8}\u{c}\r", "\"\\n\\t\\b\\f\\r\""),
        ];
        for (input, want) in cases {
            let mut s = String::new();
            push_str(&mut s, input);
            assert_eq!(&s, want);
        }
    }

    #[test]
    fn test_backslash_replace_escapes_invalid_bytes() {
        assert_eq!(backslash_replace(b"ok"), ("ok".to_string(), true));
        assert_eq!(backslash_replace(b"\xc3("), ("\\xc3(".to_string(), false));
        assert_eq!(
            backslash_replace(b"latin1_\xe9t\xe9"),
            ("latin1_\\xe9t\\xe9".to_string(), false)
        );
        assert_eq!(backslash_replace("é".as_bytes()), ("é".to_string(), true));
    }

    #[test]
    fn test_object_field_order_and_separators() {
        let mut o = Object::new();
        o.str("path", "/").int("mode", 16877).map("xattrs", &[]);
        assert_eq!(
            o.finish(),
            "{\"path\": \"/\", \"mode\": 16877, \"xattrs\": {}}"
        );
    }
}
