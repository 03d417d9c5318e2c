//! Kconfig text: parse `.config`/fragment lines, merge a fragment, and check that it survived.
//!
//! Pure functions over text; the build runs `make olddefconfig` in between.

use std::collections::BTreeMap;
use std::fmt;

/// The value one line gives a symbol: `CONFIG_X=v` or `# CONFIG_X is not set`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `CONFIG_X=...` with the text after `=` (`y`, `m`, `250`, `"str"`).
    Set(String),
    /// `# CONFIG_X is not set`.
    NotSet,
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Set(v) => f.write_str(v),
            Value::NotSet => f.write_str("is not set"),
        }
    }
}

/// One option line of a config: the symbol without `CONFIG_`, and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub symbol: String,
    pub value: Value,
}

/// Parses one line; `None` for blank lines and ordinary comments.
pub fn parse_line(line: &str) -> Option<Setting> {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("# CONFIG_") {
        let symbol = rest.strip_suffix(" is not set")?;
        return valid_symbol(symbol).then(|| Setting { symbol: symbol.to_string(), value: Value::NotSet });
    }
    let rest = line.strip_prefix("CONFIG_")?;
    let (symbol, value) = rest.split_once('=')?;
    valid_symbol(symbol).then(|| Setting { symbol: symbol.to_string(), value: Value::Set(value.to_string()) })
}

fn valid_symbol(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A parse error in a fragment: a line that looks like an option but is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line_no: usize,
    pub text: String,
}

/// Parses a fragment strictly: every non-blank line is an option or a `#` comment; a symbol
/// given twice is an error too (the second would silently win).
pub fn parse_fragment(text: &str) -> Result<Vec<Setting>, BadLine> {
    let mut out: Vec<Setting> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        let bad = || BadLine { line_no: i + 1, text: line.to_string() };
        if t.is_empty() {
            continue;
        }
        match parse_line(t) {
            Some(opt) => {
                if out.iter().any(|o| o.symbol == opt.symbol) {
                    return Err(bad());
                }
                out.push(opt);
            }
            None if t.starts_with("CONFIG_") || t.starts_with("# CONFIG_") => return Err(bad()),
            None if t.starts_with('#') => {}
            None => return Err(bad()),
        }
    }
    Ok(out)
}

/// Parses a whole `.config` into symbol → value (last line wins, as in Kconfig).
pub fn parse_config(text: &str) -> BTreeMap<String, Value> {
    text.lines().filter_map(parse_line).map(|o| (o.symbol, o.value)).collect()
}

/// Merges a fragment into a base `.config`, as `scripts/kconfig/merge_config.sh -m` does: every
/// line of the base that mentions a fragment symbol is removed, then the fragment lines appended.
pub fn merge(base: &str, fragment: &[Setting]) -> String {
    let mut out = String::with_capacity(base.len() + fragment.len() * 32);
    for line in base.lines() {
        let overridden = parse_line(line).is_some_and(|o| fragment.iter().any(|f| f.symbol == o.symbol));
        if !overridden {
            out.push_str(line);
            out.push('\n');
        }
    }
    for opt in fragment {
        out.push_str(&render(opt));
        out.push('\n');
    }
    out
}

/// The `.config` line for one option.
pub fn render(opt: &Setting) -> String {
    match &opt.value {
        Value::Set(v) => format!("CONFIG_{}={}", opt.symbol, v),
        Value::NotSet => format!("# CONFIG_{} is not set", opt.symbol),
    }
}

/// A fragment option that `olddefconfig` did not keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub symbol: String,
    pub wanted: Value,
    /// What the final config has: `None` when the symbol is absent (its dependencies are off).
    pub got: Option<Value>,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let got = match &self.got {
            Some(v) => v.to_string(),
            None => "absent (a dependency is off)".to_string(),
        };
        match &self.wanted {
            Value::Set(v) => write!(f, "CONFIG_{}={} → {}", self.symbol, v, got),
            Value::NotSet => write!(f, "# CONFIG_{} is not set → {}", self.symbol, got),
        }
    }
}

/// Every fragment option whose value the final config does not have. A `not set` line is kept
/// when the symbol is absent, `not set` or `=n`.
pub fn dropped(fragment: &[Setting], final_config: &BTreeMap<String, Value>) -> Vec<Dropped> {
    fragment
        .iter()
        .filter(|opt| {
            let got = final_config.get(&opt.symbol);
            match &opt.value {
                Value::Set(v) => got != Some(&Value::Set(v.clone())),
                Value::NotSet => !matches!(got, None | Some(Value::NotSet)) && got != Some(&Value::Set("n".into())),
            }
        })
        .map(|opt| Dropped { symbol: opt.symbol.clone(), wanted: opt.value.clone(), got: final_config.get(&opt.symbol).cloned() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str, v: &str) -> Setting {
        Setting { symbol: s.into(), value: Value::Set(v.into()) }
    }
    fn unset(s: &str) -> Setting {
        Setting { symbol: s.into(), value: Value::NotSet }
    }

    #[test]
    fn parses_lines() {
        let cases: &[(&str, Option<Setting>)] = &[
            ("CONFIG_PVH=y", Some(set("PVH", "y"))),
            ("  CONFIG_HZ=250  ", Some(set("HZ", "250"))),
            ("CONFIG_CMDLINE=\"a=b c\"", Some(set("CMDLINE", "\"a=b c\""))),
            ("# CONFIG_VT is not set", Some(unset("VT"))),
            ("# Platform: 64-bit", None),
            ("#", None),
            ("", None),
            ("CONFIG_=y", None),
            ("CONFIG_A-B=y", None),
            ("# CONFIG_VT is off", None),
        ];
        for (line, want) in cases {
            assert_eq!(&parse_line(line), want, "line {line:?}");
        }
    }

    #[test]
    fn fragment_is_strict() {
        let ok = "# c\n\nCONFIG_A=y\n# CONFIG_B is not set\n";
        assert_eq!(parse_fragment(ok).unwrap(), vec![set("A", "y"), unset("B")]);
        let typo = "CONFIG_A=y\nCONFIG_B y\n";
        assert_eq!(parse_fragment(typo).unwrap_err().line_no, 2);
        let junk = "CONFIG_A=y\nPVH=y\n";
        assert_eq!(parse_fragment(junk).unwrap_err().line_no, 2);
        let twice = "CONFIG_A=y\n# CONFIG_A is not set\n";
        assert_eq!(parse_fragment(twice).unwrap_err().line_no, 2);
    }

    #[test]
    fn merge_replaces_base_lines_and_keeps_the_rest() {
        let base = "#\n# head\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\nCONFIG_D=1\n";
        let frag = [set("B", "y"), unset("C"), set("E", "y")];
        let merged = merge(base, &frag);
        assert_eq!(merged, "#\n# head\nCONFIG_A=y\nCONFIG_D=1\nCONFIG_B=y\n# CONFIG_C is not set\nCONFIG_E=y\n");
    }

    #[test]
    fn finds_dropped_options() {
        let frag = [
            set("KEPT", "y"),
            set("GONE", "y"),
            set("CHANGED", "y"),
            unset("OFF_ABSENT"),
            unset("OFF_NOTSET"),
            unset("OFF_N"),
            unset("OFF_BUT_ON"),
        ];
        let cfg = parse_config("CONFIG_KEPT=y\nCONFIG_CHANGED=m\n# CONFIG_OFF_NOTSET is not set\nCONFIG_OFF_N=n\nCONFIG_OFF_BUT_ON=y\n");
        let d = dropped(&frag, &cfg);
        let names: Vec<&str> = d.iter().map(|x| x.symbol.as_str()).collect();
        assert_eq!(names, ["GONE", "CHANGED", "OFF_BUT_ON"]);
        assert_eq!(d[0].to_string(), "CONFIG_GONE=y → absent (a dependency is off)");
        assert_eq!(d[1].to_string(), "CONFIG_CHANGED=y → m");
        assert_eq!(d[2].to_string(), "# CONFIG_OFF_BUT_ON is not set → y");
    }

    #[test]
    fn the_shipped_fragment_parses() {
        let frag = parse_fragment(include_str!("../../../kernel/x86_64.fragment")).unwrap();
        assert!(frag.contains(&set("PVH", "y")));
        assert!(frag.contains(&unset("MODULES")));
    }
}
