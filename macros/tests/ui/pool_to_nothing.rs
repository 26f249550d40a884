use cnnc_macros::cnn;

fn main() {
    let _ = cnn! {
        name: too_deep,
        input: [4, 4, 1],
        layers: [
            conv2d { filters: 8, kernel_size: 3 },
            max_pooling2d { pool_size: 2 },
            max_pooling2d { pool_size: 2 },
        ],
    };
}
