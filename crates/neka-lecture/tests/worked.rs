//! The lecture's worked examples, checked against candle's operators and neka's layers.

use candle_core::{DType, Device, Module, Tensor};
use neka_cnn::arith::ReceptiveField;
use neka_cnn::{conv2d, Conv2dConfig, LayerSpec, Padding, Pool2d};
use neka_lecture::conv::{self as lecture, LECTURE_INPUT, LECTURE_KERNEL};

type R = Result<(), Box<dyn std::error::Error>>;

fn input() -> Tensor {
    Tensor::new(&LECTURE_INPUT, &Device::Cpu)
        .unwrap()
        .reshape((1, 1, 5, 5))
        .unwrap()
}

/// A neka Conv2d whose weight is the lecture's kernel (no bias).
fn lecture_conv(cfg: Conv2dConfig) -> neka_cnn::Conv2d {
    let mut varmap = candle_nn::VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&varmap, DType::F32, &Device::Cpu);
    let conv = conv2d(cfg.bias(false), vb.pp("c")).unwrap();
    varmap
        .set_one(
            "c.weight",
            Tensor::new(&LECTURE_KERNEL, &Device::Cpu)
                .unwrap()
                .reshape((1, 1, 3, 3))
                .unwrap(),
        )
        .unwrap();
    conv
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.squeeze(0).unwrap().squeeze(0).unwrap().to_vec2().unwrap()
}

#[test]
fn one_d_convolution_flips_the_kernel() -> R {
    assert_eq!(
        lecture::convolve_full_1d(&[3., 1., 2.], &[3., 2., 1.]),
        vec![9., 9., 11., 5., 2.]
    );
    let f = Tensor::new(&[3f32, 1., 2.], &Device::Cpu)?.reshape((1, 1, 3))?;
    // candle's conv1d correlates: with the kernel as given it is NOT the convolution ...
    let g = Tensor::new(&[3f32, 2., 1.], &Device::Cpu)?.reshape((1, 1, 3))?;
    let corr = f.conv1d(&g, 2, 1, 1, 1)?.flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(corr, vec![3., 7., 13., 7., 6.]);
    // ... with the kernel flipped it is.
    let flipped = Tensor::new(&[1f32, 2., 3.], &Device::Cpu)?.reshape((1, 1, 3))?;
    assert_eq!(
        f.conv1d(&flipped, 2, 1, 1, 1)?
            .flatten_all()?
            .to_vec1::<f32>()?,
        vec![9., 9., 11., 5., 2.]
    );
    Ok(())
}

#[test]
fn two_d_examples_match_the_notes_and_the_reference() -> R {
    let x = lecture::to_rows(&LECTURE_INPUT);
    let k = lecture::to_rows(&LECTURE_KERNEL);
    let valid = lecture_conv(Conv2dConfig::new(1, 1, 3)).forward(&input())?;
    assert_eq!(
        rows(&valid),
        vec![vec![12., 12., 17.], vec![10., 17., 19.], vec![9., 6., 14.]]
    );
    let same = lecture_conv(Conv2dConfig::new(1, 1, 3).padding(Padding::Same)).forward(&input())?;
    assert_eq!(same.dims(), &[1, 1, 5, 5]);
    assert_eq!(rows(&same)[0], vec![6., 14., 17., 11., 3.]);
    assert_eq!(rows(&same), lecture::correlate_2d(&x, &k, 1, 1, 1));
    for (s, d) in [(2, 1), (1, 2), (2, 2)] {
        let y = lecture_conv(Conv2dConfig::new(1, 1, 3).stride(s).dilation(d)).forward(&input())?;
        assert_eq!(
            rows(&y),
            lecture::correlate_2d(&x, &k, 0, s, d),
            "stride {s} dilation {d}"
        );
    }
    let s2 = lecture_conv(Conv2dConfig::new(1, 1, 3).stride(2)).forward(&input())?;
    assert_eq!(rows(&s2), vec![vec![12., 17.], vec![9., 14.]]);
    Ok(())
}

#[test]
fn non_square_kernels_and_same_padding() -> R {
    let varmap = candle_nn::VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&varmap, DType::F32, &Device::Cpu);
    let c = conv2d(
        Conv2dConfig::new(1, 4, 1)
            .kernel(1, 3)
            .padding(Padding::Same),
        vb.pp("a"),
    )?;
    assert_eq!(c.forward(&input())?.dims(), &[1, 4, 5, 5]);
    let c = conv2d(Conv2dConfig::new(1, 2, 1).kernel(3, 5), vb.pp("b"))?;
    assert_eq!(c.forward(&input())?.dims(), &[1, 2, 3, 1]);
    assert!(conv2d(
        Conv2dConfig::new(1, 1, 4).padding(Padding::Same),
        vb.pp("e")
    )
    .is_err());
    assert!(conv2d(Conv2dConfig::new(3, 4, 3).groups(2), vb.pp("g")).is_err());
    let g = conv2d(
        Conv2dConfig::new(4, 4, 3).groups(4).padding(Padding::Same),
        vb.pp("dw"),
    )?;
    assert_eq!(g.weight().dims(), &[4, 1, 3, 3]);
    assert_eq!(
        g.forward(&Tensor::ones((2, 4, 6, 6), DType::F32, &Device::Cpu)?)?
            .dims(),
        &[2, 4, 6, 6]
    );
    assert_eq!("same".parse::<Padding>()?, Padding::Same);
    assert_eq!("1,2".parse::<Padding>()?, Padding::Explicit(1, 2));
    Ok(())
}

#[test]
fn max_and_average_pooling() -> R {
    let x = input();
    let max = Pool2d::max(2).stride(1).forward(&x)?;
    assert_eq!(rows(&max)[0], vec![3., 3., 3., 3.]);
    let avg = Pool2d::avg(2).forward(&x)?;
    assert_eq!(rows(&avg), vec![vec![1.5, 1.75], vec![1.5, 1.5]]);
    // padding: max pads with -inf (never wins), avg with zeros that count
    let maxp = Pool2d::max(3).stride(1).padding(1).forward(&x)?;
    assert_eq!(maxp.dims(), &[1, 1, 5, 5]);
    assert_eq!(rows(&maxp)[0][0], 3.0);
    let avgp = Pool2d::avg(3).stride(1).padding(1).forward(&x)?;
    assert!((rows(&avgp)[0][0] - (3. + 3. + 0. + 0.) / 9.).abs() < 1e-6);
    Ok(())
}

#[test]
fn summary_matches_the_real_models() -> R {
    for name in neka_cnn::MODEL_NAMES {
        let varmap = candle_nn::VarMap::new();
        let vb = neka_common::init::seeded_var_builder(&varmap, DType::F32, &Device::Cpu);
        let (model, cfg) = neka_cnn::CnnModel::from_name(name, 1, 28, 10, vb)?;
        let s = neka_cnn::CnnModel::summary_for(name, &cfg)?;
        // parameters and buffers (batch norm's running statistics) are counted apart
        let (params, buffers) = neka_common::optim::count_parameters(&varmap);
        assert_eq!(s.total_params(), params, "{name}");
        assert_eq!(s.total_buffers(), buffers, "{name}");
        let y = candle_core::ModuleT::forward_t(
            &model,
            &Tensor::zeros((3, 1, 28, 28), DType::F32, &Device::Cpu)?,
            false,
        )?;
        assert_eq!(y.dims(), &[3, 10]);
        assert_eq!(s.output_shape(), &[10]);
    }
    let s = neka_cnn::mnist_net::Config::default().summary()?;
    assert_eq!(s.total_params(), 1_199_882); // pytorch/examples' Net
    let pool = s.layers.iter().find(|l| l.name == "pool").unwrap();
    assert_eq!(pool.output_shape, vec![64, 12, 12]);
    assert_eq!(pool.receptive_field, Some((6, 6)));
    assert_eq!(
        neka_cnn::lenet5::Config::default()
            .summary()?
            .total_params(),
        61_706
    );
    let text = s.to_string();
    assert!(text.contains("fc1") && text.contains("1,179,776"), "{text}");
    Ok(())
}

#[test]
fn receptive_field_of_pooling_and_dilation() {
    let rf = ReceptiveField::default()
        .after(3, 1, 1)
        .after(2, 2, 1)
        .after(3, 1, 1);
    assert_eq!(rf.size, 8);
    let bad = neka_cnn::summarize(
        (1, 2, 2),
        &[("c", LayerSpec::Conv(Conv2dConfig::new(1, 1, 3)))],
    );
    assert!(bad.unwrap_err().to_string().contains("layer `c`"));
}

#[test]
fn one_by_one_conv_cuts_macs_and_conv_shares_parameters() -> R {
    // 64 channels on 28x28: a direct 3x3 conv vs a 1x1 bottleneck to 16 channels first
    let direct = neka_cnn::summarize(
        (64, 28, 28),
        &[(
            "c",
            LayerSpec::Conv(Conv2dConfig::new(64, 64, 3).padding(Padding::Same)),
        )],
    )?;
    let bottleneck = neka_cnn::summarize(
        (64, 28, 28),
        &[
            ("r", LayerSpec::Conv(Conv2dConfig::new(64, 16, 1))),
            (
                "c",
                LayerSpec::Conv(Conv2dConfig::new(16, 64, 3).padding(Padding::Same)),
            ),
        ],
    )?;
    assert_eq!(direct.total_macs(), 64 * 784 * 64 * 9);
    assert_eq!(bottleneck.total_macs(), 16 * 784 * 64 + 64 * 784 * 16 * 9);
    assert!(bottleneck.total_macs() * 3 < direct.total_macs());
    assert_eq!(bottleneck.output_shape(), direct.output_shape());
    let varmap = candle_nn::VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&varmap, DType::F32, &Device::Cpu);
    let y = neka_cnn::conv1x1(64, 16, vb.pp("p"))?.forward(&Tensor::zeros(
        (1, 64, 7, 9),
        DType::F32,
        &Device::Cpu,
    )?)?;
    assert_eq!(y.dims(), &[1, 16, 7, 9]);
    // parameter sharing: 320 conv parameters vs ~17 M for a dense layer to the same output
    let conv = Conv2dConfig::new(1, 32, 3);
    assert_eq!(conv.num_params(), 320);
    assert_eq!(
        neka_cnn::arith::linear_params(784, 32 * 26 * 26, true),
        784 * 21_632 + 21_632
    );
    Ok(())
}
