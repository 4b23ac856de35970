//! Weight averaging: the mean of the snapshots, exactly, in the variables' dtype.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, VarMap};
use neka_common::train::WeightAverage;

#[test]
fn average_is_the_mean_of_the_snapshots() {
    let vm = VarMap::new();
    let dev = Device::Cpu;
    let w = vm
        .get((2, 2), "w", Init::Const(0.), DType::F32, &dev)
        .unwrap();
    let b = vm.get(2, "b", Init::Const(0.), DType::F32, &dev).unwrap();
    let mut avg = WeightAverage::default();
    assert!(avg.apply(&vm).is_err(), "applying no snapshots is an error");
    let data = vm.data().lock().unwrap().clone();
    for k in 0..4 {
        let k = k as f32;
        data["w"]
            .set(&Tensor::new(&[[k, 2.0 * k], [-k, 1.0]], &dev).unwrap())
            .unwrap();
        data["b"]
            .set(&Tensor::new(&[k * k, 3.0], &dev).unwrap())
            .unwrap();
        avg.add(&vm).unwrap();
    }
    assert_eq!(avg.count(), 4);
    avg.apply(&vm).unwrap();
    // k = 0..3: mean k = 1.5, mean k² = 3.5
    assert_eq!(
        w.to_vec2::<f32>().unwrap(),
        vec![vec![1.5, 3.0], vec![-1.5, 1.0]]
    );
    assert_eq!(b.to_vec1::<f32>().unwrap(), vec![3.5, 3.0]);
    assert_eq!(w.dtype(), DType::F32);
}
