//! Measures this machine's single-core FMA peak: independent AVX-512 (else AVX2) FMA chains on
//! one thread. Run: `cargo run --release -p cnnc-benches --bin fma_peak`.

fn main() {
    match cnnc_benches::fma_peak_gflops() {
        Some((isa, gflops)) => println!("single-core {isa} FMA peak: {gflops:.1} GFLOP/s"),
        None => println!("no AVX2/AVX-512 FMA on this CPU: nothing to measure"),
    }
}
