//! Which shell runs a script, and what in the script that shell cannot run.
//!
//! meta-virtualization's vxn-init.sh starts with `#!/bin/sh` but takes a digest apart with
//! `${digest/://}`, which bash and busybox's ash accept and dash does not. With dash as the
//! image's /bin/sh (as in Debian-based images) that line stops with "Bad substitution": a script
//! ends there, a `$(...)` returns nothing, and in vxn-init.sh the image's config (WorkingDir,
//! Env) is silently dropped. Nothing in the boot says why.
//!
//! The shell is recognised by the name of the file `/bin/sh` resolves to, since that is how
//! images install one (`/bin/sh -> dash`, `-> busybox`, `-> bash`); a shell this module does not
//! know is taken to run everything. The constructs are the parameter expansions that dash
//! rejects at run time ("Bad substitution"), found by a reader that follows the shell's quoting,
//! comments and here-documents but runs nothing: an expansion in a branch that never runs is
//! reported too.

/// A shell that lacks constructs scripts commonly borrow from bash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    /// The Debian Almquist shell: POSIX expansions only.
    Dash,
}

impl Shell {
    /// The shell that the file at `path` (a resolved path inside an image) is, when it is one
    /// this module knows to lack bash's expansions.
    pub fn from_path(path: &str) -> Option<Shell> {
        match path.rsplit('/').next() {
            Some("dash") => Some(Shell::Dash),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Shell::Dash => "dash",
        }
    }
}

/// A construct of a script that its shell cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// 1-based line of the construct.
    pub line: usize,
    /// The construct as written, from `${` to its `}` (cut after 60 bytes).
    pub text: String,
    /// What it is, for a message ("pattern substitution").
    pub kind: &'static str,
}

/// Every construct of `script` that `shell` cannot run, in order.
pub fn unsupported(script: &[u8], shell: Shell) -> Vec<Unsupported> {
    match shell {
        Shell::Dash => Lexer::new(script).bash_expansions(),
    }
}

/// How the text at a position is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    /// Shell code: the top level, or inside `$(...)` (`depth` counts open parentheses).
    Code { depth: usize },
    /// Inside double quotes.
    Double,
}

/// A here-document whose body starts on the next line.
struct HereDoc {
    delimiter: Vec<u8>,
    /// `<<-`: leading tabs are stripped from the body and the delimiter line.
    strip_tabs: bool,
    /// An unquoted delimiter: the body is expanded.
    expands: bool,
}

struct Lexer<'a> {
    text: &'a [u8],
    pos: usize,
    line: usize,
    found: Vec<Unsupported>,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a [u8]) -> Self {
        Lexer {
            text,
            pos: 0,
            line: 1,
            found: Vec::new(),
        }
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.text.get(self.pos + ahead).copied()
    }

    /// Moves past one byte, counting lines.
    fn bump(&mut self) {
        if self.peek(0) == Some(b'\n') {
            self.line += 1;
        }
        self.pos += 1;
    }

    /// Walks the whole script, recording each parameter expansion dash rejects.
    fn bash_expansions(mut self) -> Vec<Unsupported> {
        let mut stack = vec![Context::Code { depth: 0 }];
        let mut heredocs: Vec<HereDoc> = Vec::new();
        // Whether the next byte starts a word, where `#` starts a comment.
        let mut word_start = true;
        while let Some(b) = self.peek(0) {
            let context = *stack.last().unwrap_or(&Context::Code { depth: 0 });
            match (context, b) {
                (_, b'\\') => {
                    self.bump();
                    self.bump();
                    word_start = false;
                    continue;
                }
                (_, b'$') => {
                    self.dollar(&mut stack);
                    word_start = false;
                    continue;
                }
                (Context::Double, b'"') => {
                    stack.pop();
                }
                (Context::Double, _) => {}
                (Context::Code { .. }, b'\'') => {
                    self.bump();
                    self.skip_to(b'\'');
                    word_start = false;
                    continue;
                }
                (Context::Code { .. }, b'"') => stack.push(Context::Double),
                (Context::Code { .. }, b'#') if word_start => {
                    self.skip_to(b'\n');
                    continue;
                }
                (Context::Code { depth }, b'(') => {
                    if let Some(Context::Code { depth: d }) = stack.last_mut() {
                        *d = depth + 1;
                    }
                }
                (Context::Code { depth }, b')') => {
                    if depth == 0 && stack.len() > 1 {
                        stack.pop();
                    } else if let Some(Context::Code { depth: d }) = stack.last_mut() {
                        *d = depth.saturating_sub(1);
                    }
                }
                (Context::Code { .. }, b'<') if self.peek(1) == Some(b'<') => {
                    if self.peek(2) == Some(b'<') {
                        // A here-string (`<<<`): its word is read as any other.
                        self.pos += 3;
                    } else {
                        self.pos += 2;
                        if let Some(heredoc) = self.heredoc_operator() {
                            heredocs.push(heredoc);
                        }
                    }
                    word_start = true;
                    continue;
                }
                (Context::Code { .. }, b'\n') => {
                    self.bump();
                    for heredoc in std::mem::take(&mut heredocs) {
                        self.heredoc_body(&heredoc);
                    }
                    word_start = true;
                    continue;
                }
                _ => {}
            }
            word_start = matches!(context, Context::Code { .. })
                && matches!(b, b' ' | b'\t' | b';' | b'&' | b'|' | b'(' | b')');
            self.bump();
        }
        self.found
    }

    /// Moves past the next `end` (or to the end of the text).
    fn skip_to(&mut self, end: u8) {
        while let Some(b) = self.peek(0) {
            if b == end {
                if end != b'\n' {
                    self.bump();
                }
                return;
            }
            self.bump();
        }
    }

    /// At a `$`: records `${...}` that dash rejects; `$(` and `$((` open code; `$'...'` is
    /// skipped (dash reads it as `$` and a single-quoted string, bash as a C string: neither
    /// expands inside).
    fn dollar(&mut self, stack: &mut Vec<Context>) {
        self.bump();
        match self.peek(0) {
            Some(b'{') => {
                let start = self.pos - 1;
                self.bump();
                if let Some(kind) = self.expansion_kind() {
                    let end = self.text[start..]
                        .iter()
                        .position(|&b| b == b'}' || b == b'\n')
                        .map_or(self.text.len(), |e| start + e + 1);
                    let shown = &self.text[start..end.min(start + 60)];
                    self.found.push(Unsupported {
                        line: self.line,
                        text: String::from_utf8_lossy(shown).trim_end().to_string(),
                        kind,
                    });
                }
            }
            Some(b'(') => {
                self.bump();
                stack.push(Context::Code { depth: 0 });
            }
            Some(b'\'') if matches!(stack.last(), Some(Context::Code { .. })) => {
                self.bump();
                while let Some(b) = self.peek(0) {
                    self.bump();
                    match b {
                        b'\\' => self.bump(),
                        b'\'' => break,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// Just after `${`: which bash-only form this expansion is, if any. POSIX has `${name}`,
    /// `${#name}` and `${name` followed by `-`, `=`, `?`, `+` (each optionally after `:`), `#`,
    /// `##`, `%` or `%%`.
    fn expansion_kind(&self) -> Option<&'static str> {
        let rest = &self.text[self.pos..];
        let name_len = |s: &[u8]| -> usize {
            match s.first() {
                Some(b) if b.is_ascii_alphabetic() || *b == b'_' => s
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                    .count(),
                Some(b) if b.is_ascii_digit() => {
                    s.iter().take_while(|b| b.is_ascii_digit()).count()
                }
                Some(b'@' | b'*' | b'#' | b'?' | b'-' | b'$' | b'!') => 1,
                _ => 0,
            }
        };
        if rest.first() == Some(&b'!') {
            let after = &rest[1..];
            let n = name_len(after);
            // `${!}` is the PID of the last background job; `${!name}` is bash's indirection.
            return (n > 0 && after.first() != Some(&b'}')).then_some("indirect expansion");
        }
        if rest.first() == Some(&b'#') && rest.get(1) != Some(&b'}') {
            // `${#name}`, the length: POSIX (`${#}` and `${##...}` are the `#` parameter).
            let n = name_len(&rest[1..]);
            if n > 0 && rest.get(1 + n) == Some(&b'}') {
                return None;
            }
        }
        let n = name_len(rest);
        if n == 0 {
            return None;
        }
        match rest.get(n) {
            Some(b'/') => Some("pattern substitution"),
            Some(b':') => match rest.get(n + 1) {
                Some(b'-' | b'=' | b'?' | b'+') => None,
                _ => Some("substring expansion"),
            },
            Some(b'^' | b',') => Some("case modification"),
            Some(b'[') => Some("array subscript"),
            Some(b'@') => Some("parameter transformation"),
            _ => None,
        }
    }

    /// Just after `<<`: the here-document's delimiter word (quoted or not), left in place for
    /// the code to read on.
    fn heredoc_operator(&self) -> Option<HereDoc> {
        let mut i = self.pos;
        let strip_tabs = self.text.get(i) == Some(&b'-');
        if strip_tabs {
            i += 1;
        }
        while matches!(self.text.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        let mut delimiter = Vec::new();
        let mut expands = true;
        while let Some(&b) = self.text.get(i) {
            match b {
                b'\'' | b'"' => {
                    expands = false;
                    let close = self.text[i + 1..].iter().position(|&c| c == b)?;
                    delimiter.extend_from_slice(&self.text[i + 1..i + 1 + close]);
                    i += close + 2;
                }
                b'\\' => {
                    expands = false;
                    delimiter.extend(self.text.get(i + 1));
                    i += 2;
                }
                b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'<' | b'>' | b'(' | b')' => break,
                _ => {
                    delimiter.push(b);
                    i += 1;
                }
            }
        }
        (!delimiter.is_empty()).then_some(HereDoc {
            delimiter,
            strip_tabs,
            expands,
        })
    }

    /// At the first line of a here-document's body: reads up to its delimiter line, recording
    /// expansions when the body is expanded.
    fn heredoc_body(&mut self, heredoc: &HereDoc) {
        while self.pos < self.text.len() {
            let end = self.text[self.pos..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(self.text.len(), |e| self.pos + e);
            let mut line = &self.text[self.pos..end];
            if heredoc.strip_tabs {
                while line.first() == Some(&b'\t') {
                    line = &line[1..];
                }
            }
            if line == heredoc.delimiter.as_slice() {
                self.pos = end;
                if self.pos < self.text.len() {
                    self.bump();
                }
                return;
            }
            while self.pos < end {
                match self.peek(0) {
                    Some(b'\\') if heredoc.expands => {
                        self.bump();
                        self.bump();
                    }
                    Some(b'$') if heredoc.expands => {
                        // `$(` inside a body opens code that ends on this line in practice.
                        let mut stack = vec![Context::Double];
                        self.dollar(&mut stack);
                    }
                    _ => self.bump(),
                }
            }
            if self.pos < self.text.len() {
                self.bump();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(script: &str) -> Vec<(usize, String, &'static str)> {
        unsupported(script.as_bytes(), Shell::Dash)
            .into_iter()
            .map(|u| (u.line, u.text, u.kind))
            .collect()
    }

    #[test]
    fn dash_is_recognised_by_the_name_sh_resolves_to() {
        assert_eq!(Shell::from_path("/bin/dash"), Some(Shell::Dash));
        assert_eq!(Shell::from_path("/usr/bin/dash"), Some(Shell::Dash));
        for other in [
            "/bin/busybox",
            "/bin/busybox.nosuid",
            "/bin/bash",
            "/bin/sh",
            "/bin/dash2",
        ] {
            assert_eq!(Shell::from_path(other), None, "{other}");
        }
    }

    #[test]
    fn the_expansions_dash_rejects_are_found_with_their_lines() {
        let script = "#!/bin/sh\n\
            blob=\"$dir/blobs/${digest/://}\"\n\
            echo ${x//a/b} ${x:1} ${x:1:2} ${!name} ${x^^} ${x,} ${a[0]} ${x@Q}\n";
        assert_eq!(
            kinds(script),
            [
                (2, "${digest/://}".to_string(), "pattern substitution"),
                (3, "${x//a/b}".to_string(), "pattern substitution"),
                (3, "${x:1}".to_string(), "substring expansion"),
                (3, "${x:1:2}".to_string(), "substring expansion"),
                (3, "${!name}".to_string(), "indirect expansion"),
                (3, "${x^^}".to_string(), "case modification"),
                (3, "${x,}".to_string(), "case modification"),
                (3, "${a[0]}".to_string(), "array subscript"),
                (3, "${x@Q}".to_string(), "parameter transformation"),
            ]
        );
    }

    #[test]
    fn posix_expansions_pass() {
        let script = "echo ${x} ${x:-a} ${x:=a} ${x:?a} ${x:+a} ${x-a} ${x=a} ${x?a} ${x+a}\n\
            echo ${#x} ${#} ${##} ${x#a} ${x##a} ${x%a} ${x%%a} ${!} ${1} ${10} ${@} ${*} ${$} ${?}\n\
            echo $x $# $! $((1 + 2)) $(echo a) `echo b` ${x:-${y}} \"${x%%:*}\"\n";
        assert_eq!(kinds(script), []);
    }

    #[test]
    fn quotes_comments_and_escapes_are_followed() {
        let script = "echo '${x/a/b}' \\${x/a/b} # ${x/a/b}\n\
            # ${x/a/b} in a comment\n\
            echo a#${y/a/b} \"${z/a/b}\" \"'${w/a/b}'\"\n\
            echo $'${v/a/b}' \"$(echo ${u/a/b})\"\n";
        assert_eq!(
            kinds(script)
                .into_iter()
                .map(|(line, text, _)| (line, text))
                .collect::<Vec<_>>(),
            [
                (3, "${y/a/b}".to_string()),
                (3, "${z/a/b}".to_string()),
                (3, "${w/a/b}".to_string()),
                (4, "${u/a/b}".to_string()),
            ]
        );
    }

    #[test]
    fn here_documents_expand_only_with_an_unquoted_delimiter() {
        let script = "cat <<EOF\n${a/x/y} 'quotes are text here'\nEOF\n\
            cat <<'EOF'\n${b/x/y}\nEOF\n\
            : << \"DISABLED\"\n${c/x/y}\nDISABLED\n\
            cat <<-\tEND >/dev/null\n\t${d/x/y}\n\tEND\n\
            cat <<\\EOF\n${e/x/y}\nEOF\n\
            echo ${f/x/y} <<<\"${g/x/y}\"\n";
        assert_eq!(
            kinds(script)
                .into_iter()
                .map(|(line, text, _)| (line, text))
                .collect::<Vec<_>>(),
            [
                (2, "${a/x/y}".to_string()),
                (11, "${d/x/y}".to_string()),
                (16, "${f/x/y}".to_string()),
                (16, "${g/x/y}".to_string()),
            ]
        );
    }

    #[test]
    fn a_long_construct_is_cut() {
        let long = format!("echo ${{x/{}/b}}\n", "a".repeat(100));
        let found = kinds(&long);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1.len(), 60);
    }
}
