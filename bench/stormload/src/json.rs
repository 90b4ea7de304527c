//! One JSON object on one line, written by hand (flat keys, numbers, strings and nested objects
//! are all the report needs).

use std::fmt::Write;

#[derive(Default)]
pub struct Object(String);

impl Object {
    pub fn new() -> Self {
        Self::default()
    }

    fn key(&mut self, key: &str) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        write_string(&mut self.0, key);
        self.0.push(':');
    }

    pub fn str(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        write_string(&mut self.0, value);
        self
    }

    pub fn int(mut self, key: &str, value: u64) -> Self {
        self.key(key);
        let _ = write!(self.0, "{value}");
        self
    }

    /// A float with three decimals (milliseconds to the microsecond); NaN and infinities as null.
    pub fn num(mut self, key: &str, value: f64) -> Self {
        self.key(key);
        if value.is_finite() {
            let _ = write!(self.0, "{value:.3}");
        } else {
            self.0.push_str("null");
        }
        self
    }

    pub fn opt_num(self, key: &str, value: Option<f64>) -> Self {
        self.num(key, value.unwrap_or(f64::NAN))
    }

    pub fn object(mut self, key: &str, value: Object) -> Self {
        self.key(key);
        self.0.push_str(&value.finish());
        self
    }

    pub fn finish(self) -> String {
        if self.0.is_empty() {
            "{}".to_owned()
        } else {
            self.0 + "}"
        }
    }
}

fn write_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::Object;

    #[test]
    fn writes_one_line() {
        let inner = Object::new().int("n", 2);
        let line = Object::new()
            .str("phase", "q\"uiet")
            .num("p50", 1.23456)
            .opt_num("none", None)
            .object("inner", inner)
            .finish();
        assert_eq!(line, r#"{"phase":"q\"uiet","p50":1.235,"none":null,"inner":{"n":2}}"#);
        assert_eq!(Object::new().finish(), "{}");
    }
}
