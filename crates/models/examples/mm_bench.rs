use candle_core::{DType, Device, Tensor};
fn main() {
    let dev = Device::Cpu;
    for (m, k, n) in [
        (2048usize, 576usize, 1536usize),
        (2048, 1536, 576),
        (2048, 576, 576),
        (2048, 576, 192),
        (170, 576, 49152),
    ] {
        let a = Tensor::randn(0f32, 1., (m, k), &dev).unwrap();
        let w = Tensor::randn(0f32, 1., (n, k), &dev).unwrap();
        for _ in 0..3 {
            let _ = a.matmul(&w.t().unwrap()).unwrap();
        }
        let r = 20;
        let t = std::time::Instant::now();
        for _ in 0..r {
            let _ = a.matmul(&w.t().unwrap()).unwrap();
        }
        let dt = t.elapsed().as_secs_f64() / r as f64;
        // contiguous transposed weight
        let wt = w.t().unwrap().contiguous().unwrap();
        let t = std::time::Instant::now();
        for _ in 0..r {
            let _ = a.matmul(&wt).unwrap();
        }
        let dt2 = t.elapsed().as_secs_f64() / r as f64;
        println!(
            "{m} {k} {n}: w.t() {:.2} ms {:.1} GFLOP/s | wt contiguous {:.2} ms {:.1} GFLOP/s",
            dt * 1e3,
            2.0 * (m * k * n) as f64 / dt / 1e9,
            dt2 * 1e3,
            2.0 * (m * k * n) as f64 / dt2 / 1e9
        );
        let _ = DType::F32;
    }
}
