//! `wgnn::federated` on each device: FedAvg with one client and one local step is
//! centralized SGD bit for bit; the server's average is the row-weighted mean of the
//! clients' own SGD runs; a run (Dirichlet split, FedProx, DP noise) gives the same
//! bits twice; FedAvg learns the MNIST subset over 10 clients; the splits deal every
//! row once; and the settings it refuses.

use crate::common::serial;
use wgnn::data::Dataset;
use wgnn::federated::{fed_avg, split_dirichlet, split_iid, DpNoise, FedConfig};
use wgnn::nn::{self, Linear, Module, Sequential};
use wgnn::optim::{Optimizer, Sgd, SgdConfig};
use wgnn::{Device, Error};

crate::device_tests!(
    fed_avg_with_one_client_and_one_step_is_centralized_sgd_bit_for_bit,
    the_server_averages_the_clients_sgd_runs_weighted_by_their_rows,
    a_federated_run_gives_the_same_bits_twice,
    fed_avg_learns_the_mnist_subset_over_ten_clients,
);

/// 40 rows of 6 features in 3 classes.
fn toy() -> Dataset {
    let n = 40;
    let features = (0..n * 6).map(|i| ((i * 29 % 17) as f32 - 8.0) / 8.0).collect();
    let labels = (0..n).map(|i| (i * 5 % 3) as u32).collect();
    Dataset {
        features,
        labels,
        n,
        dim: 6,
    }
}

fn net(dev: &Device) -> Sequential {
    wgnn::manual_seed(6);
    Sequential::new()
        .add(Linear::new(6, 8, dev))
        .add(nn::Tanh)
        .add(Linear::new(8, 3, dev))
}

fn bits(model: &Sequential) -> Vec<u32> {
    model
        .parameters()
        .iter()
        .flat_map(|p| p.to_vec().unwrap())
        .map(f32::to_bits)
        .collect()
}

/// `steps` plain SGD steps on `rows` of `data` in order, `batch` rows at a time.
fn sgd(model: &Sequential, data: &Dataset, rows: &[usize], batch: usize, lr: f32, dev: &Device) {
    let mut opt = Sgd::new(
        model.parameters(),
        SgdConfig {
            lr,
            ..Default::default()
        },
    );
    for chunk in rows.chunks(batch) {
        let (x, y) = data.select(chunk).tensors(dev).unwrap();
        let loss = nn::loss::cross_entropy(&model.forward(&x), &y);
        opt.step(&loss.backward().unwrap()).unwrap();
    }
}

fn config(rounds: usize, clients_per_round: usize, batch_size: usize) -> FedConfig {
    FedConfig {
        rounds,
        clients_per_round,
        batch_size,
        lr: 0.3,
        shuffle: false,
        ..Default::default()
    }
}

fn fed_avg_with_one_client_and_one_step_is_centralized_sgd_bit_for_bit(dev: &Device) {
    let _serial = serial();
    let data = toy();
    let all: Vec<usize> = (0..data.n).collect();
    let federated = net(dev);
    let reports = fed_avg(
        &federated,
        &data,
        std::slice::from_ref(&all),
        None,
        &config(1, 1, data.n),
    )
    .unwrap();
    assert_eq!(reports[0].clients, vec![0]);
    let central = net(dev);
    sgd(&central, &data, &all, data.n, 0.3, dev);
    assert_eq!(bits(&federated), bits(&central), "{dev}");
    // Three rounds of one client with batches of 16 are 9 centralized steps.
    let federated = net(dev);
    fed_avg(&federated, &data, std::slice::from_ref(&all), None, &config(3, 1, 16)).unwrap();
    let central = net(dev);
    for _ in 0..3 {
        sgd(&central, &data, &all, 16, 0.3, dev);
    }
    assert_eq!(bits(&federated), bits(&central), "{dev}: three rounds");
}

fn the_server_averages_the_clients_sgd_runs_weighted_by_their_rows(dev: &Device) {
    let _serial = serial();
    let data = toy();
    let clients = vec![(0..10).collect::<Vec<_>>(), (10..40).collect()];
    let federated = net(dev);
    let start: Vec<Vec<f32>> = federated.parameters().iter().map(|p| p.to_vec().unwrap()).collect();
    let reports = fed_avg(&federated, &data, &clients, None, &config(1, 2, 8)).unwrap();
    assert_eq!((reports[0].rows, reports[0].clients.clone()), (40, vec![0, 1]));
    let mut want: Vec<Vec<f64>> = start.iter().map(|p| vec![0.0; p.len()]).collect();
    for rows in &clients {
        let local = net(dev);
        for (p, s) in local.parameters().iter().zip(&start) {
            p.assign(s).unwrap();
        }
        sgd(&local, &data, rows, 8, 0.3, dev);
        let weight = rows.len() as f64 / 40.0;
        for (w, p) in want.iter_mut().zip(local.parameters()) {
            for (w, v) in w.iter_mut().zip(p.to_vec().unwrap()) {
                *w += weight * f64::from(v);
            }
        }
    }
    let want: Vec<u32> = want.iter().flatten().map(|&v| (v as f32).to_bits()).collect();
    assert_eq!(bits(&federated), want, "{dev}");
    assert_eq!(reports[0].bytes_per_client, 4 * (6 * 8 + 8 + 8 * 3 + 3));
}

fn a_federated_run_gives_the_same_bits_twice(dev: &Device) {
    let _serial = serial();
    let data = toy();
    let clients = split_dirichlet(&data.labels, 4, 1.0, 3).unwrap();
    let run = || {
        let model = net(dev);
        let c = FedConfig {
            rounds: 3,
            clients_per_round: 3,
            local_epochs: 2,
            batch_size: 4,
            lr: 0.2,
            mu: 0.1,
            dp: Some(DpNoise { clip: 0.5, sigma: 0.3 }),
            shuffle: true,
            seed: 9,
        };
        let reports = fed_avg(&model, &data, &clients, None, &c).unwrap();
        (bits(&model), reports)
    };
    let (a, ra) = run();
    let (b, rb) = run();
    assert_eq!(a, b, "{dev}: two runs differ");
    assert_eq!(ra, rb);
    assert!(
        ra.iter().any(|r| r.clients != ra[0].clients),
        "{dev}: every round sampled the same clients"
    );
    // The noise and the proximal term change the result.
    let model = net(dev);
    fed_avg(
        &model,
        &data,
        &clients,
        None,
        &FedConfig {
            dp: None,
            mu: 0.1,
            seed: 9,
            rounds: 3,
            clients_per_round: 3,
            local_epochs: 2,
            batch_size: 4,
            lr: 0.2,
            shuffle: true,
        },
    )
    .unwrap();
    assert_ne!(bits(&model), a, "{dev}: DP noise changed nothing");
}

fn fed_avg_learns_the_mnist_subset_over_ten_clients(dev: &Device) {
    let _serial = serial();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist_5k.csv.gz");
    let (train, test) = wgnn::data::load_mnist_csv_gz(path).unwrap().shuffle_split(0, 4000);
    let clients = split_iid(train.n, 10, 1).unwrap();
    wgnn::manual_seed(0);
    let model = Sequential::new()
        .add(Linear::new(784, 64, dev))
        .add(nn::Relu)
        .add(Linear::new(64, 10, dev));
    let c = FedConfig {
        rounds: 4,
        clients_per_round: 5,
        local_epochs: 2,
        batch_size: 32,
        lr: 0.1,
        ..Default::default()
    };
    let reports = fed_avg(&model, &train, &clients, Some(&test), &c).unwrap();
    let acc: Vec<f64> = reports.iter().map(|r| r.test_accuracy.unwrap()).collect();
    eprintln!("{dev}: FedAvg test accuracy per round {acc:?}");
    assert!(acc[3] >= 0.78, "{dev}: after 4 rounds {acc:?}");
    assert!(acc[3] > acc[0], "{dev}: {acc:?}");
}

#[test]
fn splits_deal_every_row_to_one_client_and_dirichlet_skews_the_labels() {
    let labels: Vec<u32> = (0..2000).map(|i| (i * 7 % 10) as u32).collect();
    let check = |split: &[Vec<usize>]| {
        let mut all: Vec<usize> = split.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..2000).collect::<Vec<_>>());
        assert!(split.iter().all(|c| !c.is_empty() && c.windows(2).all(|w| w[0] < w[1])));
    };
    let iid = split_iid(2000, 20, 4).unwrap();
    check(&iid);
    assert!(iid.iter().all(|c| c.len() == 100));
    assert_eq!(iid, split_iid(2000, 20, 4).unwrap());
    // The mean number of classes that make up 90% of a client's rows.
    let classes = |split: &[Vec<usize>]| {
        let per: Vec<usize> = split
            .iter()
            .map(|rows| {
                let mut counts = [0usize; 10];
                rows.iter().for_each(|&i| counts[labels[i] as usize] += 1);
                counts.sort_unstable_by(|a, b| b.cmp(a));
                let mut covered = 0;
                1 + counts
                    .iter()
                    .position(|&c| {
                        covered += c;
                        covered * 10 >= rows.len() * 9
                    })
                    .unwrap()
            })
            .collect();
        per.iter().sum::<usize>() as f64 / per.len() as f64
    };
    let skewed = split_dirichlet(&labels, 10, 0.1, 2).unwrap();
    let mild = split_dirichlet(&labels, 10, 100.0, 2).unwrap();
    check(&skewed);
    check(&mild);
    let (s, m, i) = (classes(&skewed), classes(&mild), classes(&iid));
    assert!(
        s < 3.5 && m > 7.5 && i > 7.5,
        "classes per client: α 0.1 {s}, α 100 {m}, IID {i}"
    );
    assert_eq!(skewed, split_dirichlet(&labels, 10, 0.1, 2).unwrap());
}

#[test]
fn federated_learning_refuses_what_it_cannot_run() {
    let dev = Device::cpu();
    let data = toy();
    let model = net(&dev);
    let setting = |r: wgnn::Result<Vec<wgnn::federated::RoundReport>>| match r {
        Err(Error::InvalidSetting { setting, message }) => format!("{setting}: {message}"),
        other => panic!("{:?}", other.map(|_| ())),
    };
    let ok = vec![(0..20).collect::<Vec<_>>(), (20..40).collect()];
    let run = |clients: &[Vec<usize>], c: FedConfig| setting(fed_avg(&model, &data, clients, None, &c));
    assert!(run(&[], config(1, 1, 4)).contains("no clients"));
    assert!(run(&[vec![0, 1], vec![]], config(1, 1, 4)).contains("client 1 has no data"));
    assert!(run(&[vec![0, 40]], config(1, 1, 4)).contains("client 0 holds row 40"));
    assert!(run(&ok, config(0, 1, 4)).starts_with("rounds"));
    assert!(run(&ok, config(1, 3, 4)).contains("3 clients per round, but there are 2"));
    assert!(run(
        &ok,
        FedConfig {
            lr: f32::NAN,
            ..config(1, 1, 4)
        }
    )
    .starts_with("lr"));
    assert!(run(
        &ok,
        FedConfig {
            mu: -1.0,
            ..config(1, 1, 4)
        }
    )
    .starts_with("mu"));
    let dp = Some(DpNoise { clip: -1.0, sigma: 1.0 });
    assert!(run(&ok, FedConfig { dp, ..config(1, 1, 4) }).starts_with("dp clip"));
    let narrow = Dataset {
        features: vec![0.0; 10],
        labels: vec![0; 2],
        n: 2,
        dim: 5,
    };
    let m = setting(fed_avg(&model, &data, &ok, Some(&narrow), &config(1, 1, 4)));
    assert!(m.contains("5 features"), "{m}");
    assert!(split_iid(3, 4, 0).is_err() && split_iid(3, 0, 0).is_err());
    assert!(split_dirichlet(&data.labels, 2, 0.0, 0).is_err());
    let m = split_dirichlet(&data.labels, 40, 0.05, 0).unwrap_err().to_string();
    assert!(m.contains("got no data"), "{m}");
}
