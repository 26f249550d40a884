//! `cnnc summary` prints the seeds' parameter totals.

mod support;

use support::{cnnc, model};

#[test]
fn summary_prints_the_seed_totals() {
    for (file, total) in [
        ("mnist_cnn.yaml", "421,642"),
        ("cifar10_cnn.yaml", "1,337,002"),
        ("lenet_mnist.yaml", "3,255,914"),
        ("lenet_cifar10.yaml", "4,239,978"),
    ] {
        let run = cnnc(["summary".as_ref(), model(file).as_os_str()]);
        run.assert_ok();
        assert!(
            run.stdout.contains(&format!("Total params: {total}")),
            "{file}:\n{}",
            run.stdout
        );
    }
}
