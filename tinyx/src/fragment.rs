//! Kconfig fragments and `.config` files: parsing, merging and checking.
//!
//! Both use the syntax `scripts/kconfig/confdata.c` writes: `CONFIG_FOO=y`,
//! `CONFIG_BAR="text"`, `CONFIG_BAZ=0x10`, and `# CONFIG_QUX is not set` for an
//! option that is off. Other `#` lines are comments.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Errors reading a fragment or `.config`.
#[derive(Debug, thiserror::Error)]
pub enum FragmentError {
    #[error("cannot read config fragment {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}:{line}: not a Kconfig assignment: {text:?}")]
    Syntax {
        origin: String,
        line: usize,
        text: String,
    },
}

/// The value of one option. `Off` is both "is not set" and `=n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionValue {
    Yes,
    Module,
    Off,
    /// A string, number or hex value, kept exactly as written (quotes included).
    Text(String),
}

impl OptionValue {
    fn parse(raw: &str) -> Self {
        match raw {
            "y" => Self::Yes,
            "m" => Self::Module,
            "n" => Self::Off,
            other => Self::Text(other.to_string()),
        }
    }
}

impl fmt::Display for OptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Yes => f.write_str("y"),
            Self::Module => f.write_str("m"),
            Self::Off => f.write_str("not set"),
            Self::Text(t) => f.write_str(t),
        }
    }
}

/// An ordered list of option assignments (names without the `CONFIG_` prefix).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fragment {
    pub entries: Vec<(String, OptionValue)>,
}

impl Fragment {
    /// Parses fragment or `.config` text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, FragmentError> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# CONFIG_") {
                if let Some(name) = rest.strip_suffix(" is not set") {
                    entries.push((name.to_string(), OptionValue::Off));
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let syntax = || FragmentError::Syntax {
                origin: origin.to_string(),
                line: i + 1,
                text: line.to_string(),
            };
            let rest = line.strip_prefix("CONFIG_").ok_or_else(syntax)?;
            let (name, value) = rest.split_once('=').ok_or_else(syntax)?;
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(syntax());
            }
            entries.push((name.to_string(), OptionValue::parse(value)));
        }
        Ok(Self { entries })
    }

    /// Reads and parses a fragment file.
    pub fn load(path: &Path) -> Result<Self, FragmentError> {
        let text = std::fs::read_to_string(path).map_err(|source| FragmentError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The value asked for `name`, the last assignment winning as in Kconfig.
    pub fn get(&self, name: &str) -> Option<&OptionValue> {
        self.entries
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// Sets `name`, replacing an earlier assignment in place or appending.
    pub fn set(&mut self, name: &str, value: OptionValue) {
        match self.entries.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((name.to_string(), value)),
        }
    }

    /// Later fragments override earlier ones, as `merge_config.sh` does.
    pub fn merged(fragments: &[Fragment]) -> Fragment {
        let mut out = Fragment::default();
        for frag in fragments {
            for (name, value) in &frag.entries {
                out.set(name, value.clone());
            }
        }
        out
    }

    /// Renders the fragment in `.config` syntax.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (name, value) in &self.entries {
            match value {
                OptionValue::Off => s.push_str(&format!("# CONFIG_{name} is not set\n")),
                v => s.push_str(&format!("CONFIG_{name}={v}\n")),
            }
        }
        s
    }
}

/// One option a fragment asked for that `olddefconfig` resolved differently
/// (usually an unmet `depends on`, or a `select` from another option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub option: String,
    pub wanted: OptionValue,
    pub got: OptionValue,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CONFIG_{}: fragment asks for {}, .config has {}",
            self.option, self.wanted, self.got
        )
    }
}

/// Checks every option of `wanted` against the final `.config`. An option missing
/// from `.config` is off (Kconfig omits options whose dependencies are unmet).
pub fn check_config(wanted: &Fragment, config: &Fragment) -> Vec<Mismatch> {
    let actual: BTreeMap<&str, &OptionValue> = config
        .entries
        .iter()
        .map(|(n, v)| (n.as_str(), v))
        .collect();
    let merged = Fragment::merged(std::slice::from_ref(wanted));
    merged
        .entries
        .iter()
        .filter_map(|(name, want)| {
            let got = actual
                .get(name.as_str())
                .copied()
                .unwrap_or(&OptionValue::Off);
            (got != want).then(|| Mismatch {
                option: name.clone(),
                wanted: want.clone(),
                got: got.clone(),
            })
        })
        .collect()
}

/// Applies `fragment` to `.config` text: assignments of the same option are
/// replaced in place, new ones appended. `make olddefconfig` then resolves it.
pub fn apply_to_config(config_text: &str, fragment: &Fragment) -> String {
    let mut pending: BTreeMap<&str, &OptionValue> = BTreeMap::new();
    for (name, value) in &fragment.entries {
        pending.insert(name, value);
    }
    let mut out = String::with_capacity(config_text.len() + 4096);
    for line in config_text.lines() {
        let name = line
            .strip_prefix("# CONFIG_")
            .and_then(|r| r.strip_suffix(" is not set"))
            .or_else(|| {
                line.strip_prefix("CONFIG_")
                    .and_then(|r| r.split_once('='))
                    .map(|(n, _)| n)
            });
        match name.and_then(|n| pending.remove_entry(n)) {
            Some((n, v)) => out.push_str(&render_one(n, v)),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (name, _) in &fragment.entries {
        if let Some((n, v)) = pending.remove_entry(name.as_str()) {
            out.push_str(&render_one(n, v));
        }
    }
    out
}

fn render_one(name: &str, value: &OptionValue) -> String {
    match value {
        OptionValue::Off => format!("# CONFIG_{name} is not set\n"),
        v => format!("CONFIG_{name}={v}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_assignments_not_set_lines_and_comments() {
        let f = Fragment::parse(
            "# a comment\nCONFIG_PVH=y\n\n# CONFIG_IPV6 is not set\nCONFIG_CMDLINE=\"a b\"\nCONFIG_NR_CPUS=8\nCONFIG_VIRTIO_NET=m\nCONFIG_X=n\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            f.entries,
            vec![
                ("PVH".into(), OptionValue::Yes),
                ("IPV6".into(), OptionValue::Off),
                ("CMDLINE".into(), OptionValue::Text("\"a b\"".into())),
                ("NR_CPUS".into(), OptionValue::Text("8".into())),
                ("VIRTIO_NET".into(), OptionValue::Module),
                ("X".into(), OptionValue::Off),
            ]
        );
    }

    #[test]
    fn syntax_errors_name_origin_and_line() {
        let err = Fragment::parse("CONFIG_A=y\nPVH=y\n", "microvm.config").unwrap_err();
        assert_eq!(
            err.to_string(),
            "microvm.config:2: not a Kconfig assignment: \"PVH=y\""
        );
        assert!(Fragment::parse("CONFIG_A-B=y", "x").is_err());
    }

    #[test]
    fn option_asked_for_but_off_in_config_is_reported_by_name() {
        let wanted = Fragment::parse(
            "CONFIG_PVH=y\nCONFIG_VIRTIO_NET=y\n# CONFIG_CPU_FREQ is not set\n# CONFIG_IPV6 is not set\n",
            "frag",
        )
        .unwrap();
        // VIRTIO_NET absent (its dependency was unmet), CPU_FREQ selected on.
        let config = Fragment::parse(
            "CONFIG_PVH=y\nCONFIG_CPU_FREQ=y\n# CONFIG_IPV6 is not set\n",
            ".config",
        )
        .unwrap();
        let bad = check_config(&wanted, &config);
        let names: Vec<&str> = bad.iter().map(|m| m.option.as_str()).collect();
        assert_eq!(names, ["VIRTIO_NET", "CPU_FREQ"]);
        assert_eq!(
            bad[0].to_string(),
            "CONFIG_VIRTIO_NET: fragment asks for y, .config has not set"
        );
        assert_eq!(bad[1].got, OptionValue::Yes);
    }

    #[test]
    fn matching_config_has_no_mismatch_and_off_equals_absent() {
        let wanted =
            Fragment::parse("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=n\n", "f").unwrap();
        let config = Fragment::parse("CONFIG_A=y\n", ".config").unwrap();
        assert!(check_config(&wanted, &config).is_empty());
    }

    #[test]
    fn later_fragments_override_earlier_ones() {
        let a = Fragment::parse("CONFIG_A=y\nCONFIG_B=y\n", "a").unwrap();
        let b = Fragment::parse("# CONFIG_A is not set\nCONFIG_C=y\n", "b").unwrap();
        let m = Fragment::merged(&[a, b]);
        assert_eq!(
            m.render(),
            "# CONFIG_A is not set\nCONFIG_B=y\nCONFIG_C=y\n"
        );
    }

    #[test]
    fn apply_replaces_in_place_and_appends_new_options() {
        let config = "#\n# head\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_D=\"x\"\n";
        let frag = Fragment::parse("# CONFIG_A is not set\nCONFIG_B=y\nCONFIG_E=y\n", "f").unwrap();
        assert_eq!(
            apply_to_config(config, &frag),
            "#\n# head\n# CONFIG_A is not set\nCONFIG_B=y\nCONFIG_D=\"x\"\nCONFIG_E=y\n"
        );
    }

    #[test]
    fn shipped_fragments_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let microvm = Fragment::load(&dir.join("microvm.config")).unwrap();
        assert_eq!(microvm.get("PVH"), Some(&OptionValue::Yes));
        assert_eq!(microvm.get("MODULES"), Some(&OptionValue::Off));
        let app = Fragment::load(&dir.join("app.config")).unwrap();
        assert_eq!(app.get("FUTEX"), Some(&OptionValue::Yes));
    }
}
