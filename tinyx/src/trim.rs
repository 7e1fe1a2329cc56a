//! Trimming an application image of what a server never reads: documentation, manual and
//! info pages, translations, headers, static libraries, pkg-config files, shell completions,
//! service-manager units and init scripts (the image's `/init` starts the application), and
//! modules of interpreters the image does not have.

use std::io;
use std::path::Path;

/// Bump when the rules change (part of the image cache key).
pub const RULES_VERSION: &str = "trim-1";

/// Directory trees removed whole.
const TREES: &[&str] = &[
    "usr/share/doc",
    "usr/share/doc-base",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/i18n",
    "usr/share/lintian",
    "usr/share/bug",
    "usr/share/menu",
    "usr/share/bash-completion",
    "usr/share/zsh",
    "usr/share/fish",
    "usr/share/gdb",
    "usr/share/apport",
    "usr/share/pkgconfig",
    "usr/include",
    "usr/lib/pkgconfig",
    "usr/lib/x86_64-linux-gnu/pkgconfig",
    "usr/lib/systemd",
    "lib/systemd",
    "etc/systemd",
    "etc/init.d",
    "etc/logrotate.d",
    "etc/cron.d",
    "etc/cron.daily",
    "usr/lib/tmpfiles.d",
    "usr/lib/sysusers.d",
];

/// File name endings removed anywhere: headers, static and libtool libraries.
const SUFFIXES: &[&str] = &[".h", ".a", ".la"];

/// What trimming removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub files: u64,
    pub bytes: u64,
}

/// Trims the tree at `root` in place.
pub fn trim(root: &Path) -> io::Result<Trimmed> {
    let mut t = Trimmed::default();
    let mut trees: Vec<&str> = TREES.to_vec();
    // Perl modules without a perl (debconf's, pulled in by the maintainer scripts' needs).
    if !root.join("usr/bin/perl").exists() {
        trees.push("usr/share/perl5");
        trees.push("usr/share/debconf");
        trees.push("usr/lib/x86_64-linux-gnu/perl5");
        trees.push("usr/lib/x86_64-linux-gnu/perl-base");
    }
    for tree in trees {
        let p = root.join(tree);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            count(&p, &mut t);
            std::fs::remove_dir_all(&p)?;
        }
    }
    remove_suffixes(root, &mut t)?;
    Ok(t)
}

fn count(dir: &Path, t: &mut Trimmed) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(m) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if m.is_dir() {
            count(&e.path(), t);
        } else {
            t.files += 1;
            if m.is_file() {
                t.bytes += m.len();
            }
        }
    }
}

fn remove_suffixes(dir: &Path, t: &mut Trimmed) -> io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = std::fs::symlink_metadata(e.path())?;
        if m.is_dir() {
            remove_suffixes(&e.path(), t)?;
        } else {
            let name = e.file_name().to_string_lossy().into_owned();
            if SUFFIXES.iter().any(|s| name.ends_with(s)) {
                t.files += 1;
                if m.is_file() {
                    t.bytes += m.len();
                }
                std::fs::remove_file(e.path())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_headers_and_static_libraries_go_configuration_and_binaries_stay() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for (p, data) in [
            ("usr/share/doc/nginx/copyright", "c"),
            ("usr/share/man/man8/nginx.8.gz", "mm"),
            ("usr/include/zlib.h", "hhh"),
            ("usr/lib/x86_64-linux-gnu/libz.a", "aaaa"),
            ("usr/lib/x86_64-linux-gnu/libz.so.1", "so"),
            ("usr/sbin/nginx", "elf"),
            ("etc/nginx/nginx.conf", "conf"),
            ("usr/share/perl5/Debconf/Db.pm", "pm"),
        ] {
            let p = r.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        let t = trim(r).unwrap();
        assert_eq!(t.files, 5);
        assert_eq!(t.bytes, 1 + 2 + 3 + 4 + 2);
        assert!(r.join("usr/sbin/nginx").exists());
        assert!(r.join("etc/nginx/nginx.conf").exists());
        assert!(r.join("usr/lib/x86_64-linux-gnu/libz.so.1").exists());
        assert!(!r.join("usr/share/doc").exists());
        assert!(!r.join("usr/share/perl5").exists());
    }
}
