//! The build cache of `--backend native`: one shared library per cache key.
//!
//! Layout under the cache directory ([`default_cache_dir`]):
//! - `src/<key>/`: the generated crate (kept at a stable path, files rewritten only when they
//!   differ, so that cargo's fingerprints hold and rebuilding a lost entry is quick);
//! - `target/`: the one `CARGO_TARGET_DIR` of every build (cargo locks it, so concurrent builds
//!   wait for each other; package names carry the key, so no build overwrites another's
//!   library);
//! - `lib/<key>.so` (the platform's suffix): the finished library, copied out of `target/`
//!   into a temporary file and renamed into place;
//! - `lib/<key>.sha256`: the library's SHA-256, written (atomically) after the library. An
//!   entry counts only when this marker exists and matches the library's bytes, so a library
//!   being written, truncated or corrupted is rebuilt, never loaded.
//!
//! The key is a SHA-256 over everything that decides the library's machine code: the generated
//! source, the codegen options, cnnc's version, the ABI version, `rustc -V`, the `RUSTFLAGS`
//! and the target features they enable on this machine (`rustc --print cfg`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use cnnc_runtime::data::write_atomic;
use sha2::{Digest, Sha256};

use super::abi::ABI_VERSION;
use super::CrateBackendError;
use crate::codegen::GeneratedCrate;

/// The flags of the cached builds: the code is built for the machine that runs it.
pub const RUSTFLAGS: &str = "-C target-cpu=native";

/// Lines of cargo's output kept in a build error.
const TAIL_LINES: usize = 40;

/// `$CNNC_CACHE_DIR`, else `$XDG_CACHE_HOME/cnnc`, else `$HOME/.cache/cnnc` (empty values
/// count as unset).
pub fn default_cache_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("CNNC_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("cnnc")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("cnnc")))
}

/// The cargo to run: `$CARGO` (set when cnnc runs under cargo) or `cargo` on the `PATH`.
fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// `rustc -V` and the target configuration of this machine with [`RUSTFLAGS`], asked once.
fn toolchain() -> Result<&'static str, String> {
    static TOOLCHAIN: OnceLock<Result<String, String>> = OnceLock::new();
    TOOLCHAIN
        .get_or_init(|| {
            let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
            let run = |args: &[&str]| -> Result<String, String> {
                let out = Command::new(&rustc)
                    .args(args)
                    .output()
                    .map_err(|e| format!("running {} {}: {e}", rustc.to_string_lossy(), args.join(" ")))?;
                if !out.status.success() {
                    return Err(format!(
                        "{} {} failed: {}",
                        rustc.to_string_lossy(),
                        args.join(" "),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            };
            let version = run(&["-V"])?;
            let mut cfg_args = vec!["--print", "cfg"];
            cfg_args.extend(RUSTFLAGS.split(' '));
            let cfg = run(&cfg_args)?;
            Ok(format!("{version}{cfg}"))
        })
        .as_deref()
        .map_err(Clone::clone)
}

/// The directory of cached builds.
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

/// A built (or found) library.
#[derive(Clone, Debug)]
pub struct Entry {
    pub library: PathBuf,
    /// Whether it was in the cache (no cargo run).
    pub hit: bool,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Cache { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The cache key of `krate` generated with `options` (their `Debug` text), for this
    /// compiler and toolchain.
    pub fn key(&self, model: &str, krate: &GeneratedCrate, options: &str) -> Result<String, CrateBackendError> {
        let toolchain = toolchain().map_err(|msg| CrateBackendError::Toolchain {
            model: model.into(),
            msg,
        })?;
        let mut h = Sha256::new();
        let mut field = |name: &str, value: &[u8]| {
            h.update(format!("{name} {}\n", value.len()).as_bytes());
            h.update(value);
        };
        field("cnnc", env!("CARGO_PKG_VERSION").as_bytes());
        field("abi", ABI_VERSION.to_string().as_bytes());
        field("toolchain", toolchain.as_bytes());
        field("rustflags", RUSTFLAGS.as_bytes());
        field("options", options.as_bytes());
        for (path, text) in &krate.files {
            field(&path.to_string_lossy(), text.as_bytes());
        }
        Ok(hex(&h.finalize()))
    }

    pub fn library_path(&self, key: &str) -> PathBuf {
        self.root
            .join("lib")
            .join(format!("{key}{}", std::env::consts::DLL_SUFFIX))
    }

    pub fn marker_path(&self, key: &str) -> PathBuf {
        self.root.join("lib").join(format!("{key}.sha256"))
    }

    /// The crate's directory for `key`.
    pub fn source_dir(&self, key: &str) -> PathBuf {
        self.root.join("src").join(key)
    }

    /// The library of `key` if a complete entry exists: its marker holds the SHA-256 of its
    /// bytes. Anything else (no marker, a marker written for other bytes, an unreadable file)
    /// is a miss.
    pub fn lookup(&self, key: &str) -> Option<PathBuf> {
        let marker = std::fs::read_to_string(self.marker_path(key)).ok()?;
        let library = self.library_path(key);
        let bytes = std::fs::read(&library).ok()?;
        (marker.trim() == hex(&Sha256::digest(&bytes))).then_some(library)
    }

    /// The library of `krate` under `key`: from the cache, else built with cargo (after
    /// calling `before_build`) and installed.
    pub fn get_or_build(
        &self,
        model: &str,
        key: &str,
        krate: &GeneratedCrate,
        before_build: impl FnOnce(),
    ) -> Result<Entry, CrateBackendError> {
        if let Some(library) = self.lookup(key) {
            return Ok(Entry { library, hit: true });
        }
        before_build();
        let library = self.build(model, key, krate)?;
        Ok(Entry { library, hit: false })
    }

    /// Writes `krate` to `src/<key>`, builds it in release mode for this CPU and installs the
    /// library (see the module docs for the order that keeps readers from a partial entry).
    fn build(&self, model: &str, key: &str, krate: &GeneratedCrate) -> Result<PathBuf, CrateBackendError> {
        let io = |what: &'static str, path: &Path| {
            let (model, path) = (model.to_string(), path.to_path_buf());
            move |source| CrateBackendError::Io {
                model,
                what,
                path,
                source,
            }
        };
        let dir = self.source_dir(key);
        for (rel, text) in &krate.files {
            let path = dir.join(rel);
            if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
                continue;
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
            }
            write_atomic(&path, text.as_bytes()).map_err(io("writing", &path))?;
        }
        let target = self.root.join("target");
        let out = Command::new(cargo())
            .args(["build", "--release", "--offline", "--quiet", "--manifest-path"])
            .arg(dir.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .env("RUSTFLAGS", RUSTFLAGS)
            .env("CARGO_TERM_COLOR", "never")
            // Flags the environment might carry for cnnc's own build take precedence over
            // RUSTFLAGS; these builds use exactly RUSTFLAGS (and the key says so).
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .output()
            .map_err(|e| CrateBackendError::Toolchain {
                model: model.into(),
                msg: format!("running {}: {e}", cargo().to_string_lossy()),
            })?;
        if !out.status.success() {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
            return Err(CrateBackendError::Build {
                model: model.into(),
                dir,
                status: out.status.to_string(),
                tail,
            });
        }
        let built = target.join("release").join(format!(
            "{}{}{}",
            std::env::consts::DLL_PREFIX,
            krate.package,
            std::env::consts::DLL_SUFFIX
        ));
        let bytes = std::fs::read(&built).map_err(io("reading the built library", &built))?;
        let lib_dir = self.root.join("lib");
        std::fs::create_dir_all(&lib_dir).map_err(io("creating", &lib_dir))?;
        let library = self.library_path(key);
        write_atomic(&library, &bytes).map_err(io("installing the library", &library))?;
        let marker = self.marker_path(key);
        let digest = format!("{}\n", hex(&Sha256::digest(&bytes)));
        write_atomic(&marker, digest.as_bytes()).map_err(io("writing", &marker))?;
        Ok(library)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
