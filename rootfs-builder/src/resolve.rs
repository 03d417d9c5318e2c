//! Resolve a path inside an image root, following the image's own symlinks (`/sbin` →
//! `usr/sbin` on merged-/usr distributions), never the host's.

use std::collections::VecDeque;

/// What is at a path inside the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Missing,
    Dir,
    Symlink(String),
    Other,
}

/// Answers "what is at this resolved path" for one image (a staging dir or an ext4 image).
pub trait Lookup {
    fn node(&mut self, path: &str) -> Result<Node, String>;
}

const MAX_HOPS: usize = 40;

fn comps(p: &str) -> impl Iterator<Item = String> + '_ {
    p.split('/').filter(|c| !c.is_empty()).map(String::from)
}

/// The real path of `path` inside the image: every symlink in a directory component is
/// followed inside the image root; the last component is followed only when `follow_last`.
/// Missing components are kept as they are (they will be created).
pub fn resolve(l: &mut impl Lookup, path: &str, follow_last: bool) -> Result<String, String> {
    let mut rem: VecDeque<String> = comps(path).collect();
    let mut cur: Vec<String> = Vec::new();
    let mut hops = 0;
    let mut missing = false;
    while let Some(c) = rem.pop_front() {
        if c == "." {
            continue;
        }
        if c == ".." {
            cur.pop();
            continue;
        }
        let last = rem.is_empty();
        if missing || (last && !follow_last) {
            cur.push(c);
            continue;
        }
        let candidate = if cur.is_empty() { format!("/{c}") } else { format!("/{}/{c}", cur.join("/")) };
        match l.node(&candidate)? {
            Node::Dir => cur.push(c),
            Node::Missing => {
                missing = true;
                cur.push(c);
            }
            Node::Other if last => cur.push(c),
            Node::Other => return Err(format!("{candidate} is not a directory")),
            Node::Symlink(target) => {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(format!("too many levels of symbolic links at {candidate}"));
                }
                if target.starts_with('/') {
                    cur.clear();
                }
                for t in comps(&target).collect::<Vec<_>>().into_iter().rev() {
                    rem.push_front(t);
                }
            }
        }
    }
    Ok(format!("/{}", cur.join("/")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    pub(crate) struct Fake(pub BTreeMap<&'static str, Node>);

    impl Lookup for Fake {
        fn node(&mut self, path: &str) -> Result<Node, String> {
            Ok(self.0.get(path).cloned().unwrap_or(Node::Missing))
        }
    }

    fn merged_usr() -> Fake {
        Fake(BTreeMap::from([
            ("/usr", Node::Dir),
            ("/usr/sbin", Node::Dir),
            ("/usr/bin", Node::Dir),
            ("/sbin", Node::Symlink("usr/sbin".into())),
            ("/bin", Node::Symlink("/usr/bin".into())),
            ("/loop", Node::Symlink("/loop".into())),
            ("/file", Node::Other),
            ("/up", Node::Symlink("usr/../usr/bin".into())),
            ("/usr/sbin/init", Node::Symlink("../lib/systemd/systemd".into())),
        ]))
    }

    #[test]
    fn table() {
        let mut l = merged_usr();
        let cases: &[(&str, bool, Result<&str, &str>)] = &[
            ("/sbin/chinit", false, Ok("/usr/sbin/chinit")),
            ("/bin/sh", false, Ok("/usr/bin/sh")),
            ("/sbin", true, Ok("/usr/sbin")),
            ("/sbin", false, Ok("/sbin")),
            ("/sbin/init", false, Ok("/usr/sbin/init")),
            ("/new/dir/x", false, Ok("/new/dir/x")),
            ("/up/x", false, Ok("/usr/bin/x")),
            ("/file", false, Ok("/file")),
            ("/file/x", false, Err("not a directory")),
            ("/loop/x", false, Err("too many levels")),
            ("/", true, Ok("/")),
        ];
        for (path, follow, want) in cases {
            let got = resolve(&mut l, path, *follow);
            match (&got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{path}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{path}: {e}"),
                _ => panic!("{path}: got {got:?}, want {want:?}"),
            }
        }
    }
}
