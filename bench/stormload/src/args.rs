//! `--key value` flags, without a parser crate: the script is the only caller.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// The flags of one command line; each is taken once by a typed getter, and `finish` refuses the
/// ones nobody took (a misspelt knob must not be ignored silently).
pub struct Flags(HashMap<String, String>);

impl Flags {
    pub fn parse(args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut flags = HashMap::new();
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            let key = arg.strip_prefix("--").ok_or_else(|| format!("expected --flag, got {arg:?}"))?.to_owned();
            let value = match args.peek() {
                Some(next) if !next.starts_with("--") => args.next().unwrap_or_default(),
                _ => String::new(), // a bare flag such as --help
            };
            if flags.insert(key.clone(), value).is_some() {
                return Err(format!("--{key} given twice"));
            }
        }
        Ok(Self(flags))
    }

    pub fn has(&mut self, key: &str) -> bool {
        self.0.remove(key).is_some()
    }

    pub fn get<T: FromStr>(&mut self, key: &str, default: T) -> Result<T, String> {
        match self.0.remove(key) {
            None => Ok(default),
            Some(value) => value.parse().map_err(|_| format!("--{key}: cannot parse {value:?}")),
        }
    }

    pub fn required<T: FromStr>(&mut self, key: &str) -> Result<T, String> {
        let value = self.0.remove(key).ok_or_else(|| format!("--{key} is required"))?;
        value.parse().map_err(|_| format!("--{key}: cannot parse {value:?}"))
    }

    pub fn seconds(&mut self, key: &str, default: f64) -> Result<Duration, String> {
        let seconds: f64 = self.get(key, default)?;
        Duration::try_from_secs_f64(seconds).map_err(|_| format!("--{key}: not a duration: {seconds}"))
    }

    /// A socket address on 127.0.0.0/8: this tool sends nothing anywhere else.
    pub fn loopback(&mut self, key: &str) -> Result<SocketAddr, String> {
        let addr: SocketAddr = self.required(key)?;
        if !addr.ip().is_loopback() {
            return Err(format!("--{key} {addr}: loopback addresses only"));
        }
        Ok(addr)
    }

    pub fn finish(self) -> Result<(), String> {
        match self.0.keys().next() {
            None => Ok(()),
            Some(key) => Err(format!("unknown flag --{key}")),
        }
    }
}
