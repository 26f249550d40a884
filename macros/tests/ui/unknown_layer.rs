use cnnc_macros::cnn;

fn main() {
    let _ = cnn! {
        name: typo,
        input: [28, 28, 1],
        layers: [
            conv3d { filters: 8, kernel_size: 3 },
        ],
    };
}
