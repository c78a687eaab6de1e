//! The rules file (`--rules FILE`, TOML): what a user tells the strategies that the log cannot.
//! Path globs to include or exclude, process selectors, the noise list, the system set-up
//! processes, the exec-tolerant parents and the binaries always replaced by stubs. The
//! built-in rules are themselves a rules file ([`DEFAULT_RULES`], printed by
//! `depsetfs rules --default`); a user's file replaces each key it sets and keeps the built-in
//! value of the others. Every error names the file, line and column.

use std::path::{Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobMatcher};
use serde::Deserialize;
use toml::Spanned;

use crate::analysis::select::{ProcessMatcher, Selector};

/// The built-in rules, as a rules file.
pub const DEFAULT_RULES: &str = r#"# depsetfs rules. `depsetfs rules --default` prints this file; copy it, edit it, pass it
# with --rules FILE. A key you set replaces the built-in value; keys you leave out keep it.
# Globs: `*` stays within one path component, `**` crosses them, `?` and `[a-z]` as usual.

[paths]
# Shipped whenever the log names them (and they exist), whatever the strategy says.
include = []
# Never shipped, whatever the strategy says (with what lies under them if the glob says so).
exclude = []

[policy]
# Files that many unrelated processes read and write. Reading them does not make a process
# depend on their writers (they are still shipped when a needed process uses them).
# Everything under /dev, /proc and /sys is noise too, whatever this list says.
noise = [
  "/etc/mtab",
  "/etc/ld.so.cache",
  "/run/utmp",
  "/var/run/utmp",
  "/var/log/wtmp",
  "/var/log/btmp",
  "/var/log/lastlog",
]
# Files that needed processes only wrote, never read (logs, tee output), are left out of the
# set; their directories stay so that the service can create them. false ships them.
drop_outputs = true

[processes]
# System set-up processes (strategy `system`): they and their descendants are needed too.
# Matched against the executable and the first two words of the command line (scripts).
system_setup = [
  "/sbin/init",
  "/lib/systemd/systemd",
  "/usr/lib/systemd/systemd",
  "/etc/rc.d/rc.sysinit",
  "/sbin/runlevel",
  "/lib/systemd/systemd-udevd",
  "/usr/lib/systemd/systemd-udevd",
  "/sbin/udevd",
]
# Parents that carry on when an exec fails (strategy `exec` does not pull in their children).
exec_tolerant = [
  "/etc/rc.d/rc",
  "/etc/init.d/rc",
]
# Binaries always replaced by a stub that exits 0: never followed, listed under "stubs".
stubs = []

[packages]
# `depsetfs packages` and `export --format dockerfile|packages`: packages whose files are
# copied like the service's own, or installed from the distribution, whatever --packages says
# (names as dpkg spells them, e.g. "libfoo1").
copy = []
install = []

# Processes to select, in addition to --pid/--exe/--cmd. Each entry has one of pid, exe, cmd
# (a regular expression over the command line) and optionally children = true. Example:
# [[select]]
# exe = "/usr/sbin/nginx"
# children = true
"#;

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Shown as `FILE:LINE:COL: message`.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// A path glob with its source text.
#[derive(Clone, Debug)]
pub struct PathGlob {
    pub text: String,
    matcher: GlobMatcher,
}

impl PathGlob {
    pub fn new(text: &str) -> Result<PathGlob, globset::Error> {
        let glob: Glob = GlobBuilder::new(text).literal_separator(true).build()?;
        Ok(PathGlob {
            text: text.to_string(),
            matcher: glob.compile_matcher(),
        })
    }

    pub fn matches(&self, path: &[u8]) -> bool {
        use std::os::unix::ffi::OsStrExt;
        self.matcher
            .is_match(Path::new(std::ffi::OsStr::from_bytes(path)))
    }
}

/// The first glob of `globs` that matches `path`.
pub fn first_match<'a>(globs: &'a [PathGlob], path: &[u8]) -> Option<&'a PathGlob> {
    globs.iter().find(|glob| glob.matches(path))
}

/// The rules the strategies use.
#[derive(Clone, Debug)]
pub struct Rules {
    pub include: Vec<PathGlob>,
    pub exclude: Vec<PathGlob>,
    pub noise: Vec<PathGlob>,
    pub drop_outputs: bool,
    pub system_setup: Vec<PathGlob>,
    pub exec_tolerant: Vec<PathGlob>,
    pub stubs: Vec<PathGlob>,
    pub select: Vec<Selector>,
    /// `[packages] copy`: packages always copied rather than installed.
    pub packages_copy: Vec<String>,
    /// `[packages] install`: packages always installed rather than copied.
    pub packages_install: Vec<String>,
    /// Where they came from, for messages: `built-in` or the file.
    pub origin: String,
}

impl Rules {
    /// The built-in rules.
    pub fn built_in() -> Rules {
        let raw = parse_raw(Path::new("built-in rules"), DEFAULT_RULES)
            .and_then(|raw| raw.compile(Path::new("built-in rules"), DEFAULT_RULES));
        match raw {
            Ok(rules) => rules,
            // The built-in text is tested; this only guards against an edit that broke it.
            Err(error) => panic!("the built-in rules do not parse: {error}"),
        }
    }

    /// The built-in rules with the keys `path` sets replaced.
    pub fn load(path: &Path) -> Result<Rules, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Rules::from_text(path, &text)
    }

    pub fn from_text(path: &Path, text: &str) -> Result<Rules, RulesError> {
        let user = parse_raw(path, text)?;
        let defaults = parse_raw(Path::new("built-in rules"), DEFAULT_RULES)?;
        let mut rules = user.merged_over(defaults).compile(path, text)?;
        rules.origin = path.display().to_string();
        Ok(rules)
    }

    /// Whether reading `path` should not pull in its writers.
    pub fn is_noise(&self, path: &[u8]) -> bool {
        const KERNEL_TREES: [&[u8]; 3] = [b"/dev", b"/proc", b"/sys"];
        KERNEL_TREES
            .iter()
            .any(|tree| crate::analysis::paths::is_within(path, tree))
            || first_match(&self.noise, path).is_some()
    }
}

/// Matches a process pattern against an executable and the first two words of a command line.
pub fn matches_process(globs: &[PathGlob], exe: &[u8], argv: &[String]) -> bool {
    globs.iter().any(|glob| {
        glob.matches(exe)
            || argv
                .iter()
                .take(2)
                .any(|word| glob.matches(word.as_bytes()))
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRules {
    #[serde(default)]
    paths: RawPaths,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    processes: RawProcesses,
    #[serde(default)]
    packages: RawPackages,
    select: Option<Vec<Spanned<RawSelector>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPackages {
    copy: Option<Vec<Spanned<String>>>,
    install: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPaths {
    include: Option<Vec<Spanned<String>>>,
    exclude: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    noise: Option<Vec<Spanned<String>>>,
    drop_outputs: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProcesses {
    system_setup: Option<Vec<Spanned<String>>>,
    exec_tolerant: Option<Vec<Spanned<String>>>,
    stubs: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelector {
    pid: Option<u32>,
    exe: Option<String>,
    cmd: Option<Spanned<String>>,
    #[serde(default)]
    children: bool,
}

fn parse_raw(path: &Path, text: &str) -> Result<RawRules, RulesError> {
    toml::from_str(text).map_err(|error| {
        let offset = error.span().map_or(0, |span| span.start);
        invalid(path, text, offset, error.message().trim())
    })
}

fn invalid(path: &Path, text: &str, offset: usize, message: &str) -> RulesError {
    let (line, column) = line_and_column(text, offset);
    RulesError::Invalid {
        path: path.to_path_buf(),
        line,
        column,
        message: message.to_string(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

impl RawRules {
    fn merged_over(self, defaults: RawRules) -> RawRules {
        RawRules {
            paths: RawPaths {
                include: self.paths.include.or(defaults.paths.include),
                exclude: self.paths.exclude.or(defaults.paths.exclude),
            },
            policy: RawPolicy {
                noise: self.policy.noise.or(defaults.policy.noise),
                drop_outputs: self.policy.drop_outputs.or(defaults.policy.drop_outputs),
            },
            processes: RawProcesses {
                system_setup: self
                    .processes
                    .system_setup
                    .or(defaults.processes.system_setup),
                exec_tolerant: self
                    .processes
                    .exec_tolerant
                    .or(defaults.processes.exec_tolerant),
                stubs: self.processes.stubs.or(defaults.processes.stubs),
            },
            packages: RawPackages {
                copy: self.packages.copy.or(defaults.packages.copy),
                install: self.packages.install.or(defaults.packages.install),
            },
            select: self.select.or(defaults.select),
        }
    }

    /// Compiles globs and regexes. Spans of values the user did not set point into the
    /// built-in text; they never fail (tested).
    fn compile(self, path: &Path, text: &str) -> Result<Rules, RulesError> {
        let globs = |list: Option<Vec<Spanned<String>>>| compile_globs(path, text, list);
        let packages_copy = package_names(path, text, self.packages.copy)?;
        let packages_install = package_names(path, text, self.packages.install)?;
        if let Some(both) = packages_copy
            .iter()
            .find(|p| packages_install.iter().any(|q| q.0 == p.0))
        {
            return Err(invalid(
                path,
                text,
                both.1,
                &format!(
                    "{:?}: a package is either copied or installed, not both",
                    both.0
                ),
            ));
        }
        Ok(Rules {
            include: globs(self.paths.include)?,
            exclude: globs(self.paths.exclude)?,
            noise: globs(self.policy.noise)?,
            drop_outputs: self.policy.drop_outputs.unwrap_or(true),
            system_setup: globs(self.processes.system_setup)?,
            exec_tolerant: globs(self.processes.exec_tolerant)?,
            stubs: globs(self.processes.stubs)?,
            select: compile_selectors(path, text, self.select.unwrap_or_default())?,
            packages_copy: packages_copy
                .into_iter()
                .map(|PackageName(name, _)| name)
                .collect(),
            packages_install: packages_install
                .into_iter()
                .map(|PackageName(name, _)| name)
                .collect(),
            origin: "built-in rules".to_string(),
        })
    }
}

fn compile_globs(
    path: &Path,
    text: &str,
    list: Option<Vec<Spanned<String>>>,
) -> Result<Vec<PathGlob>, RulesError> {
    list.unwrap_or_default()
        .into_iter()
        .map(|spanned| {
            let start = spanned.span().start;
            let value = spanned.into_inner();
            if !value.starts_with('/') {
                return Err(invalid(
                    path,
                    text,
                    start,
                    &format!("{value:?}: a path glob must be absolute"),
                ));
            }
            PathGlob::new(&value).map_err(|error| {
                invalid(path, text, start, &format!("{value:?}: {}", error.kind()))
            })
        })
        .collect()
}

/// Package names as dpkg allows them (lower case letters, digits, `+`, `-`, `.`, starting
/// with a letter or digit), each with the offset of its value for a later error.
struct PackageName(String, usize);

fn package_names(
    path: &Path,
    text: &str,
    list: Option<Vec<Spanned<String>>>,
) -> Result<Vec<PackageName>, RulesError> {
    list.unwrap_or_default()
        .into_iter()
        .map(|spanned| {
            let start = spanned.span().start;
            let name = spanned.into_inner();
            let valid = name.len() >= 2
                && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
            if !valid {
                return Err(invalid(
                    path,
                    text,
                    start,
                    &format!("{name:?}: not a package name (lower case letters, digits, + - .)"),
                ));
            }
            Ok(PackageName(name, start))
        })
        .collect()
}

fn compile_selectors(
    path: &Path,
    text: &str,
    list: Vec<Spanned<RawSelector>>,
) -> Result<Vec<Selector>, RulesError> {
    let mut selectors = Vec::new();
    for spanned in list {
        let start = spanned.span().start;
        let raw = spanned.into_inner();
        let matcher = match (raw.pid, raw.exe, raw.cmd) {
            (Some(pid), None, None) => ProcessMatcher::Pid(pid),
            (None, Some(exe), None) => ProcessMatcher::Exe(exe.into_bytes()),
            (None, None, Some(cmd)) => {
                let cmd_start = cmd.span().start;
                let pattern = cmd.into_inner();
                ProcessMatcher::cmd(&pattern)
                    .map_err(|error| invalid(path, text, cmd_start, &error.to_string()))?
            }
            _ => {
                return Err(invalid(
                    path,
                    text,
                    start,
                    "a [[select]] entry needs exactly one of pid, exe, cmd",
                ));
            }
        };
        selectors.push(Selector {
            matcher,
            children: raw.children,
        });
    }
    Ok(selectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        match Rules::from_text(Path::new("my.toml"), text) {
            Ok(_) => "no error".to_string(),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn the_built_in_rules_parse_and_have_the_seed_noise() {
        let rules = Rules::built_in();
        assert!(rules.is_noise(b"/etc/mtab"));
        assert!(rules.is_noise(b"/var/run/utmp"));
        assert!(rules.is_noise(b"/dev/console"));
        assert!(!rules.is_noise(b"/etc/app.conf"));
        assert!(rules.drop_outputs);
        assert!(matches_process(
            &rules.exec_tolerant,
            b"/bin/bash",
            &["/bin/bash".to_string(), "/etc/rc.d/rc".to_string()]
        ));
    }

    #[test]
    fn a_key_set_by_the_user_replaces_the_built_in_one_and_others_stay() {
        let rules = Rules::from_text(
            Path::new("my.toml"),
            "[policy]\nnoise = [\"/srv/shared/**\"]\n[paths]\nexclude = [\"/var/cache/**\"]\n",
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert!(rules.is_noise(b"/srv/shared/a/b"));
        assert!(!rules.is_noise(b"/etc/mtab"), "noise was replaced");
        assert!(first_match(&rules.exclude, b"/var/cache/x").is_some());
        assert!(
            !rules.system_setup.is_empty(),
            "untouched keys keep defaults"
        );
    }

    #[test]
    fn a_star_stays_in_one_component_and_two_cross_them() -> Result<(), globset::Error> {
        let one = PathGlob::new("/etc/*.conf")?;
        assert!(one.matches(b"/etc/a.conf"));
        assert!(!one.matches(b"/etc/sub/a.conf"));
        let deep = PathGlob::new("/var/**")?;
        assert!(deep.matches(b"/var/log/x/y"));
        Ok(())
    }

    #[test]
    fn errors_name_the_file_line_and_column() {
        assert_eq!(
            error_of("[paths]\ninclude = [\"/ok\", \"/bad[\"]\n"),
            "my.toml:2:19: \"/bad[\": unclosed character class; missing ']'"
        );
        assert_eq!(
            error_of("[paths]\ninclude = [\"relative\"]\n"),
            "my.toml:2:12: \"relative\": a path glob must be absolute"
        );
        assert!(
            error_of("[policy]\nnoyse = []\n").starts_with("my.toml:2:1: unknown field `noyse`")
        );
        assert!(
            error_of("[[select]]\ncmd = \"(\"\n").starts_with("my.toml:2:7: regex parse error")
        );
        assert_eq!(
            error_of("[[select]]\nchildren = true\n"),
            "my.toml:1:1: a [[select]] entry needs exactly one of pid, exe, cmd"
        );
        assert!(error_of("[paths\n").starts_with("my.toml:1:"));
        assert_eq!(
            error_of("[packages]\ncopy = [\"nginx\", \"Bad_Name\"]\n"),
            "my.toml:2:18: \"Bad_Name\": not a package name (lower case letters, digits, + - .)"
        );
        assert_eq!(
            error_of("[packages]\ncopy = [\"nginx\"]\ninstall = [\"nginx\"]\n"),
            "my.toml:2:9: \"nginx\": a package is either copied or installed, not both"
        );
        assert!(
            error_of("[packages]\nkopy = []\n").starts_with("my.toml:2:1: unknown field `kopy`")
        );
    }

    #[test]
    fn the_packages_table_lists_packages_to_copy_and_to_install() {
        let rules = Rules::from_text(
            Path::new("my.toml"),
            "[packages]\ncopy = [\"libfoo1\"]\ninstall = [\"nginx-common\"]\n",
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(rules.packages_copy, ["libfoo1"]);
        assert_eq!(rules.packages_install, ["nginx-common"]);
        assert!(Rules::built_in().packages_copy.is_empty());
    }
}
