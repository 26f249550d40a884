use cnnc_macros::cnn;

fn main() {
    let _ = cnn! {
        name: no_input,
        layers: [flatten],
    };
}
