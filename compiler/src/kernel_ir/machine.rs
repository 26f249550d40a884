//! The machine a program is scheduled for: cache sizes, SIMD width and core count. Schedules
//! are a function of kernel shapes and of this description only, never of the model.

use std::fmt;

/// Cache sizes in bytes (per core for L1 and L2, shared L3), f32 lanes per SIMD register and
/// the number of cores kernels may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Machine {
    pub l1: usize,
    pub l2: usize,
    pub l3: usize,
    /// f32 lanes per vector register: 16 (AVX-512), 8 (AVX2) or 4 (SSE / NEON / scalar fallback).
    pub vector_width: usize,
    pub cores: usize,
}

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

impl Machine {
    /// A fixed AVX-512 machine (48 KiB L1, 1 MiB L2, 32 MiB L3, 2 cores): what the IR file tests
    /// schedule for, so that their expected dumps do not depend on the host.
    pub const fn reference() -> Machine {
        Machine {
            l1: 48 * KIB,
            l2: MIB,
            l3: 32 * MIB,
            vector_width: 16,
            cores: 2,
        }
    }

    /// Conservative values for an unknown x86-64 or ARM core.
    pub const fn fallback() -> Machine {
        Machine {
            l1: 32 * KIB,
            l2: 512 * KIB,
            l3: 8 * MIB,
            vector_width: 4,
            cores: 1,
        }
    }

    /// The host: SIMD width from CPUID feature flags, cache sizes from Linux sysfs when readable
    /// (else [`Machine::fallback`]'s), cores from the OS.
    pub fn detect() -> Machine {
        let d = Machine::fallback();
        Machine {
            l1: cache_bytes(1, "Data").unwrap_or(d.l1),
            l2: cache_bytes(2, "Unified").unwrap_or(d.l2),
            l3: cache_bytes(3, "Unified").unwrap_or(d.l3),
            vector_width: detect_vector_width(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// Architectural vector registers available to a micro-kernel (32 with AVX-512, else 16).
    pub fn vector_registers(&self) -> usize {
        if self.vector_width >= 16 {
            32
        } else {
            16
        }
    }

    /// Short name of the SIMD level, for dumps.
    pub fn isa(&self) -> &'static str {
        match self.vector_width {
            16 => "avx512",
            8 => "avx2",
            _ => "simd128",
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} vw={} l1={}K l2={}K l3={}K cores={}",
            self.isa(),
            self.vector_width,
            self.l1 / KIB,
            self.l2 / KIB,
            self.l3 / KIB,
            self.cores
        )
    }
}

#[cfg(target_arch = "x86_64")]
fn detect_vector_width() -> usize {
    if is_x86_feature_detected!("avx512f") {
        16
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        8
    } else {
        4
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_vector_width() -> usize {
    4
}

/// Size of the first cache of `level` and `kind` listed for cpu0 in sysfs (`48K`, `1024K`, `32M`).
fn cache_bytes(level: usize, kind: &str) -> Option<usize> {
    cache_bytes_in(std::path::Path::new("/sys/devices/system/cpu/cpu0/cache"), level, kind)
}

fn cache_bytes_in(root: &std::path::Path, level: usize, kind: &str) -> Option<usize> {
    for entry in std::fs::read_dir(root).ok()?.flatten() {
        let dir = entry.path();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok().map(|s| s.trim().to_string());
        // Not every entry is a cache (`uevent`): skip what does not describe one.
        let (Some(l), Some(t), Some(size)) = (read("level"), read("type"), read("size")) else {
            continue;
        };
        if l.parse() == Ok(level) && t == kind {
            return parse_size(&size);
        }
    }
    None
}

fn parse_size(s: &str) -> Option<usize> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: usize = digits.parse().ok()?;
    match unit {
        "" => Some(n),
        "K" => Some(n * KIB),
        "M" => Some(n * MIB),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sysfs_sizes() {
        assert_eq!(parse_size("48K"), Some(48 * 1024));
        assert_eq!(parse_size("32M"), Some(32 * 1024 * 1024));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("x"), None);
    }

    /// sysfs lists `uevent` beside the `index*` directories, often first: it used to end the
    /// search, and every machine got the fallback's caches.
    #[test]
    fn cache_sizes_are_found_past_other_entries() {
        let root = std::env::temp_dir().join(format!("cnnc-sysfs-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("uevent"), "").unwrap();
        for (i, (level, kind, size)) in [(1, "Data", "48K"), (1, "Instruction", "32K"), (2, "Unified", "2048K")]
            .into_iter()
            .enumerate()
        {
            let d = root.join(format!("index{i}"));
            std::fs::create_dir_all(&d).unwrap();
            for (f, v) in [
                ("level", level.to_string()),
                ("type", kind.into()),
                ("size", size.into()),
            ] {
                std::fs::write(d.join(f), format!("{v}\n")).unwrap();
            }
        }
        assert_eq!(cache_bytes_in(&root, 1, "Data"), Some(48 * KIB));
        assert_eq!(cache_bytes_in(&root, 2, "Unified"), Some(2 * MIB));
        assert_eq!(cache_bytes_in(&root, 3, "Unified"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn detect_is_sane() {
        let m = Machine::detect();
        assert!([4, 8, 16].contains(&m.vector_width));
        assert!(m.cores >= 1 && m.l1 > 0 && m.l2 >= m.l1);
    }
}
