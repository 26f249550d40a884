//! The `cnn!` proc-macro: a model declared inline in Rust, with the YAML format's vocabulary,
//! checked by the real front end (parsing, validation, shape inference) while the crate
//! compiles. A bad layer is a compile error pointing at that layer.
//!
//! ```ignore
//! let spec: cnnc_compiler::spec::ModelSpec = cnnc_macros::cnn! {
//!     name: mnist_cnn,
//!     input: [28, 28, 1],
//!     layers: [
//!         conv2d { filters: 32, kernel_size: 3, padding: same, activation: relu },
//!         max_pooling2d { pool_size: 2 },
//!         flatten,
//!         dense { units: 10, activation: softmax },
//!     ],
//! };
//! ```
//!
//! The macro writes the declaration as model YAML (one layer per line), runs
//! `cnnc_compiler::spec::parse_model` and `lower` on it, and expands to a `parse_model` call on
//! that text — which cannot fail at run time, since the same text was accepted here.

mod model;
mod to_yaml;

use proc_macro::TokenStream;
use quote::quote;
use syn::parse_macro_input;

#[proc_macro]
pub fn cnn(input: TokenStream) -> TokenStream {
    let decl = parse_macro_input!(input as model::Decl);
    match to_yaml::check(&decl) {
        Ok(yaml) => {
            let name = decl.name.to_string();
            quote! {
                ::cnnc_compiler::spec::parse_model(#yaml, ::std::path::Path::new(concat!("cnn!(", #name, ")")))
                    .expect("the cnn! macro validated this model at compile time")
            }
            .into()
        }
        Err(e) => e.to_compile_error().into(),
    }
}
