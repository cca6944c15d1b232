//! No import cycles between the files of `src/`.
//!
//! The check parses every file of the library crate (from `src/lib.rs`,
//! following `mod` declarations; `syn` does the parsing) and builds a graph
//! whose nodes are files and whose edges are the paths one file names in
//! another. Then it looks for strongly connected components.
//!
//! **The rule.** File A depends on file B when A names, by a path, a module
//! or an item that B defines:
//!
//! - every leaf of a `use` tree, and every path in code or types that
//!   starts with `crate::`, `super::`, `self::` or the name of a module
//!   declared in A's module (`mod x;` then `x::f()`), is resolved segment
//!   by segment through the module tree: a path ending at a module points at
//!   that module's file, a path ending at an item at the file of the module
//!   that defines it (a glob, `use m::*`, at `m`'s file);
//! - a `mod.rs` (and `lib.rs`) is its module's **facade**: its `pub use`
//!   re-exports are not dependencies of the facade file, and a path that
//!   reaches a name through a re-export is followed to the file that really
//!   defines it. So `use super::Error` in `erofs/image.rs` depends on
//!   `erofs/error.rs`, not on `erofs/mod.rs` (any file's private `use` is
//!   followed the same way when another file names a path through it, but
//!   that `use` is an edge of its own file); code in a `mod.rs` that is not
//!   a re-export (functions, types, `x::f()` calls) counts like any other
//!   file's;
//! - `mod x;` declarations are ownership, not dependencies; a file's inline
//!   modules (`mod tests { use super::*; }`) belong to that file;
//! - `#[cfg(test)]` modules are left out: unit tests are not part of the
//!   library's structure (a file's tests may use a test-helper module that
//!   uses the file).
//!
//! Not seen: paths inside macro invocations (`format!`, `matches!`: their
//! names are almost always imported by a `use` anyway) and method calls
//! (`x.f()` names no path). A cycle means two files each need the other to
//! be understood; the fix is a third file (an interface or the shared
//! types) both depend on.
//!
//! Cycles entirely inside one of [`EXEMPT_DIRS`] are reported but tolerated
//! until the restructuring named there lands; any other cycle fails.
//! `IMPORT_CYCLES_SRC=DIR` checks another tree (e.g. an older checkout).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// Directories whose internal cycles are known and tolerated for now, with
/// the reason. Remove an entry once its cycles are gone.
const EXEMPT_DIRS: &[(&str, &str)] = &[];

/// Whether `a` is `#[cfg(test)]`.
fn is_cfg_test(a: &syn::Attribute) -> bool {
    a.path().is_ident("cfg") && a.parse_args::<syn::Ident>().is_ok_and(|i| i == "test")
}

/// A module of the crate.
#[derive(Debug, Default)]
struct Module {
    /// File (relative to the source root) holding the module.
    file: String,
    /// Whether the module is a facade (`lib.rs` or a `mod.rs`).
    facade: bool,
    /// Names of child modules (file or inline).
    children: BTreeSet<String>,
    /// Names brought in by `use` (re-exported or not): name -> (module of
    /// the `use`, path).
    imports: HashMap<String, (Vec<String>, Vec<String>)>,
}

/// A path named somewhere, to resolve once all modules are known.
#[derive(Debug)]
struct Reference {
    /// Module whose code names the path.
    module: Vec<String>,
    /// The path's segments (`*` for a glob).
    segments: Vec<String>,
    /// Whether this is a re-export in a facade (no edge of its own).
    facade_reexport: bool,
}

#[derive(Debug, Default)]
struct Crate {
    modules: BTreeMap<Vec<String>, Module>,
    references: Vec<Reference>,
}

/// Flattens a use tree into (path, exported name) leaves.
fn use_leaves(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_leaves(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let name = n.ident.to_string();
            let mut path = prefix.clone();
            if name != "self" {
                path.push(name.clone());
            }
            let exported = if name == "self" {
                prefix.last().cloned().unwrap_or_default()
            } else {
                name
            };
            out.push((path, exported));
        }
        syn::UseTree::Rename(r) => {
            let mut path = prefix.clone();
            if r.ident != "self" {
                path.push(r.ident.to_string());
            }
            out.push((path, r.rename.to_string()));
        }
        syn::UseTree::Glob(_) => {
            let mut path = prefix.clone();
            path.push("*".into());
            out.push((path, "*".into()));
        }
        syn::UseTree::Group(g) => {
            for t in &g.items {
                use_leaves(t, prefix, out);
            }
        }
    }
}

/// Collects modules, uses and paths of one file.
struct FileVisitor<'c> {
    krate: &'c mut Crate,
    /// Module stack (inline modules push onto it).
    module: Vec<String>,
    root: PathBuf,
    /// Directory where this file's `mod x;` children live.
    child_dir: PathBuf,
    /// Inline-module depth (their `mod x;` children would live deeper).
    inline_dirs: Vec<String>,
    errors: Vec<String>,
}

impl FileVisitor<'_> {
    fn module_mut(&mut self) -> &mut Module {
        self.krate.modules.entry(self.module.clone()).or_default()
    }

    fn first_segment_is_local(&self, first: &str) -> bool {
        matches!(first, "crate" | "super" | "self")
            || self
                .krate
                .modules
                .get(&self.module)
                .is_some_and(|m| m.children.contains(first))
    }
}

impl<'ast> Visit<'ast> for FileVisitor<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if m.attrs
            .iter()
            .any(|a| a.path().is_ident("path") || is_cfg_test(a))
        {
            // Unit-test modules (`#[cfg(test)] mod tests`) are not part of
            // the library's structure: a file's tests may use a test helper
            // module that uses the file. `#[path]` modules are helpers shared
            // with tests/ (outside src/).
            return;
        }
        let name = m.ident.to_string();
        self.module_mut().children.insert(name.clone());
        let mut child = self.module.clone();
        child.push(name.clone());
        match &m.content {
            Some((_, items)) => {
                let file = self.krate.modules[&self.module].file.clone();
                self.krate.modules.insert(
                    child.clone(),
                    Module {
                        file,
                        ..Module::default()
                    },
                );
                let saved = std::mem::replace(&mut self.module, child);
                self.inline_dirs.push(name);
                for item in items {
                    self.visit_item(item);
                }
                self.inline_dirs.pop();
                self.module = saved;
            }
            None => {
                let mut dir = self.child_dir.clone();
                for d in &self.inline_dirs {
                    dir.push(d);
                }
                let candidates = [
                    dir.join(format!("{name}.rs")),
                    dir.join(&name).join("mod.rs"),
                ];
                match candidates.iter().find(|p| self.root.join(p).is_file()) {
                    Some(p) => {
                        if let Err(e) = parse_file(self.krate, &self.root, p, child) {
                            self.errors.push(e);
                        }
                    }
                    None => self.errors.push(format!(
                        "module {} declared in {} has no file",
                        child.join("::"),
                        self.krate.modules[&self.module].file
                    )),
                }
            }
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let is_pub = !matches!(u.vis, syn::Visibility::Inherited);
        let facade = self.krate.modules[&self.module].facade && self.inline_dirs.is_empty();
        let mut leaves = Vec::new();
        use_leaves(&u.tree, &mut Vec::new(), &mut leaves);
        for (path, exported) in leaves {
            let local = path.first().is_some_and(|f| self.first_segment_is_local(f));
            if !local {
                continue;
            }
            let reexport = is_pub && facade;
            if exported != "*" {
                let module = self.module.clone();
                self.module_mut()
                    .imports
                    .insert(exported, (module, path.clone()));
            }
            self.krate.references.push(Reference {
                module: self.module.clone(),
                segments: path,
                facade_reexport: reexport,
            });
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if p.leading_colon.is_none()
            && segments.len() > 1
            && self.first_segment_is_local(&segments[0])
        {
            self.krate.references.push(Reference {
                module: self.module.clone(),
                segments,
                facade_reexport: false,
            });
        }
        syn::visit::visit_path(self, p);
    }
}

/// Parses `rel` (relative to `root`) as module `module`, recursively.
fn parse_file(
    krate: &mut Crate,
    root: &Path,
    rel: &Path,
    module: Vec<String>,
) -> Result<(), String> {
    let text = fs::read_to_string(root.join(rel)).map_err(|e| format!("{}: {e}", rel.display()))?;
    let file = syn::parse_file(&text).map_err(|e| format!("{}: {e}", rel.display()))?;
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let facade = name == "lib.rs" || name == "mod.rs";
    let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
    let child_dir = if facade {
        parent
    } else {
        parent.join(rel.file_stem().unwrap_or_default())
    };
    krate.modules.insert(
        module.clone(),
        Module {
            file: rel.to_string_lossy().into_owned(),
            facade,
            ..Module::default()
        },
    );
    // Child module names first, so paths through them are recognised
    // wherever they appear in the file.
    for item in &file.items {
        if let syn::Item::Mod(m) = item {
            if let Some(md) = krate.modules.get_mut(&module) {
                md.children.insert(m.ident.to_string());
            }
        }
    }
    let mut v = FileVisitor {
        krate,
        module,
        root: root.to_path_buf(),
        child_dir,
        inline_dirs: Vec::new(),
        errors: Vec::new(),
    };
    v.visit_file(&file);
    match v.errors.first() {
        Some(e) => Err(e.clone()),
        None => Ok(()),
    }
}

impl Crate {
    fn parse(root: &Path) -> Result<Crate, String> {
        let mut krate = Crate::default();
        parse_file(&mut krate, root, Path::new("lib.rs"), Vec::new())?;
        Ok(krate)
    }

    /// The file a path named in `module` points at (see the rule above);
    /// `None` for paths that leave the crate.
    fn resolve(&self, module: &[String], segments: &[String], depth: usize) -> Option<String> {
        if depth > 16 {
            return None;
        }
        let mut cur: Vec<String> = module.to_vec();
        let mut rest = segments;
        match rest.first().map(String::as_str) {
            Some("crate") => {
                cur.clear();
                rest = &rest[1..];
            }
            Some("self") => rest = &rest[1..],
            Some("super") => {
                while rest.first().map(String::as_str) == Some("super") {
                    cur.pop()?;
                    rest = &rest[1..];
                }
            }
            _ => {}
        }
        for (i, seg) in rest.iter().enumerate() {
            let m = self.modules.get(&cur)?;
            if seg == "*" {
                return Some(m.file.clone());
            }
            if m.children.contains(seg) {
                cur.push(seg.clone());
                continue;
            }
            if let Some((from, path)) = m.imports.get(seg) {
                // Through the `use` to the definition; the rest of the path
                // (e.g. `Type::method`) stays with that item.
                let mut full = path.clone();
                full.extend(rest[i + 1..].iter().cloned());
                return self.resolve(from, &full, depth + 1);
            }
            return Some(m.file.clone());
        }
        self.modules.get(&cur).map(|m| m.file.clone())
    }

    /// Edges between files, each with one path that makes it.
    fn edges(&self) -> BTreeMap<(String, String), String> {
        let mut edges = BTreeMap::new();
        for r in &self.references {
            if r.facade_reexport {
                continue;
            }
            let Some(from) = self.modules.get(&r.module).map(|m| m.file.clone()) else {
                continue;
            };
            let Some(to) = self.resolve(&r.module, &r.segments, 0) else {
                continue;
            };
            if from != to {
                edges
                    .entry((from, to))
                    .or_insert_with(|| r.segments.join("::"));
            }
        }
        edges
    }
}

/// Strongly connected components of more than one file (Tarjan).
fn cycles(edges: &BTreeMap<(String, String), String>) -> Vec<Vec<String>> {
    let mut nodes: BTreeSet<&str> = BTreeSet::new();
    let mut adj: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        nodes.insert(a);
        nodes.insert(b);
        adj.entry(a).or_default().push(b);
    }
    struct State<'a> {
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        on_stack: BTreeSet<&'a str>,
        stack: Vec<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn connect<'a>(v: &'a str, adj: &BTreeMap<&'a str, Vec<&'a str>>, s: &mut State<'a>) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for &w in adj.get(v).map(Vec::as_slice).unwrap_or(&[]) {
            if !s.index.contains_key(w) {
                connect(w, adj, s);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        index: HashMap::new(),
        low: HashMap::new(),
        on_stack: BTreeSet::new(),
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in nodes {
        if !s.index.contains_key(v) {
            connect(v, &adj, &mut s);
        }
    }
    s.out
}

/// Describes a cycle with the paths that make its edges.
fn describe(comp: &[String], edges: &BTreeMap<(String, String), String>) -> String {
    let mut s = format!("  cycle between {}:\n", comp.join(", "));
    for ((a, b), path) in edges {
        if comp.contains(a) && comp.contains(b) {
            s.push_str(&format!("    {a} -> {b} (`{path}`)\n"));
        }
    }
    s
}

/// The cycles of the crate at `root`, split into (failing, exempt).
fn check(root: &Path, exempt: &[(&str, &str)]) -> (Vec<String>, Vec<String>) {
    let krate = Crate::parse(root).unwrap_or_else(|e| panic!("parsing {}: {e}", root.display()));
    let edges = krate.edges();
    let mut failing = Vec::new();
    let mut tolerated = Vec::new();
    for comp in cycles(&edges) {
        let text = describe(&comp, &edges);
        let inside = exempt
            .iter()
            .any(|(dir, _)| comp.iter().all(|f| f.starts_with(dir)));
        if inside {
            tolerated.push(text);
        } else {
            failing.push(text);
        }
    }
    (failing, tolerated)
}

fn src_dir() -> PathBuf {
    match std::env::var_os("IMPORT_CYCLES_SRC") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
    }
}

#[test]
fn test_src_has_no_import_cycles_between_files() {
    let root = src_dir();
    let (failing, tolerated) = check(&root, EXEMPT_DIRS);
    for t in &tolerated {
        eprintln!("tolerated (see EXEMPT_DIRS):\n{t}");
    }
    assert!(
        failing.is_empty(),
        "import cycles between files of {}:\n{}",
        root.display(),
        failing.concat()
    );
}

/// Writes a small crate (`files`: path, text) and checks it.
fn check_tree(files: &[(&str, &str)]) -> (Vec<String>, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, text) in files {
        let p = dir.path().join(path);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, text).expect("write");
    }
    check(dir.path(), &[("quiet/", "test")])
}

#[test]
fn test_import_cycles_found_through_facade_reexports() {
    // a.rs names b.rs directly; b.rs reaches a.rs through the facade.
    let (failing, _) = check_tree(&[
        ("lib.rs", "pub mod m;"),
        ("m/mod.rs", "mod a; mod b; pub use a::A; pub use b::B;"),
        ("m/a.rs", "use super::b::B; pub struct A(B);"),
        ("m/b.rs", "pub struct B; pub fn f() -> super::A { todo!() }"),
    ]);
    assert_eq!(failing.len(), 1, "{failing:?}");
    assert!(
        failing[0].contains("m/a.rs -> m/b.rs") && failing[0].contains("m/b.rs -> m/a.rs"),
        "{}",
        failing[0]
    );
}

#[test]
fn test_import_cycles_facade_and_children_are_not_a_cycle() {
    // Children using the facade's re-exports of each other's siblings, and
    // inline test modules using `super::*`: no cycle.
    let (failing, tolerated) = check_tree(&[
        ("lib.rs", "pub mod m; pub use m::A;"),
        (
            "m/mod.rs",
            "mod a; mod b; mod c; pub use a::A; pub use b::B; pub use c::C;",
        ),
        ("m/a.rs", "use super::{B, C}; pub struct A(B, C);"),
        (
            "m/b.rs",
            "use super::C; pub struct B(C); #[cfg(test)] mod tests { use super::*; }",
        ),
        ("m/c.rs", "pub struct C;"),
    ]);
    assert!(failing.is_empty() && tolerated.is_empty(), "{failing:?}");
}

#[test]
fn test_import_cycles_code_in_a_facade_counts() {
    // A mod.rs calling into a child that uses the mod.rs's own type, and a
    // relative `child::f()` path; cycles in an exempt directory are only
    // reported.
    let (failing, tolerated) = check_tree(&[
        ("lib.rs", "pub mod m; pub mod quiet;"),
        (
            "m/mod.rs",
            "mod run; pub struct Args; pub fn main() { run::go(Args) }",
        ),
        ("m/run.rs", "pub fn go(_: super::Args) {}"),
        ("quiet/mod.rs", "mod x; mod y;"),
        ("quiet/x.rs", "use super::y::f; pub fn g() { f() }"),
        ("quiet/y.rs", "pub fn f() { crate::quiet::x::g() }"),
    ]);
    assert_eq!(failing.len(), 1, "{failing:?}");
    assert!(
        failing[0].contains("m/mod.rs -> m/run.rs"),
        "{}",
        failing[0]
    );
    assert_eq!(tolerated.len(), 1, "{tolerated:?}");
}

/// The top-level modules of `src/` and the ones each may use: the layers of
/// docs/architecture.md. `lib.rs`, `main.rs` and `cli/` (the command line
/// puts everything together) may use any.
const LAYERS: &[(&str, &[&str])] = &[
    ("os", &[]),
    ("metrics", &[]),
    ("source", &["os"]),
    ("erofs", &["source"]),
    ("share", &["erofs", "source", "os"]),
    ("sandbox", &["os"]),
    ("api", &["metrics"]),
    ("fuse", &["erofs", "source", "share", "os", "metrics"]),
    (
        "vhost",
        &["fuse", "erofs", "source", "share", "os", "metrics"],
    ),
];

/// The top-level module a file of `src/` belongs to (`fuse/session.rs` ->
/// `fuse`, `lib.rs` -> `lib`).
fn top_module(file: &str) -> &str {
    match file.split_once('/') {
        Some((dir, _)) => dir,
        None => file.trim_end_matches(".rs"),
    }
}

/// Every file-to-file edge that crosses top-level modules against
/// [`LAYERS`].
fn layer_violations(root: &Path) -> Vec<String> {
    let krate = Crate::parse(root).unwrap_or_else(|e| panic!("parsing {}: {e}", root.display()));
    let mut out = Vec::new();
    for ((from, to), path) in krate.edges() {
        let (a, b) = (top_module(&from), top_module(&to));
        if a == b {
            continue;
        }
        let Some((_, allowed)) = LAYERS.iter().find(|(m, _)| *m == a) else {
            // lib.rs, main.rs, cli/: anything.
            continue;
        };
        if !allowed.contains(&b) {
            out.push(format!(
                "  {from} -> {to} (`{path}`): {a} may not use {b}\n"
            ));
        }
    }
    out
}

#[test]
fn test_src_modules_use_only_lower_layers() {
    let root = src_dir();
    let bad = layer_violations(&root);
    assert!(
        bad.is_empty(),
        "module layering (see LAYERS and docs/architecture.md) broken in {}:\n{}",
        root.display(),
        bad.concat()
    );
}

#[test]
fn test_layer_check_finds_an_upward_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, text) in [
        ("lib.rs", "pub mod erofs; pub mod fuse;"),
        ("erofs/mod.rs", "pub fn f() { crate::fuse::g() }"),
        ("fuse/mod.rs", "pub fn g() { crate::erofs::f() }"),
    ] {
        let p = dir.path().join(path);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, text).expect("write");
    }
    let bad = layer_violations(dir.path());
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains("erofs may not use fuse"), "{bad:?}");
}
