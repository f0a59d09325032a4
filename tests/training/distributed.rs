//! Data-parallel training on MPI (feature `mpi`): each test starts `mpirun` on this
//! test binary's `rank_child` over TCP loopback and compares what the ranks wrote:
//! per-step global losses and weight hashes, final weights and `fit` histories.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::breast_cancer;
use wgnn::data::DataLoader;
use wgnn::distributed::{self, Collective, DistributedOptimizer};
use wgnn::metrics::Metric;
use wgnn::nn::{self, Linear, Module, Sequential};
use wgnn::optim::{Adam, AdamConfig};
use wgnn::train::{FitConfig, Loss, ModelCheckpoint};
use wgnn::Device;

/// Where a rank writes its results (set by the parent test).
const OUT: &str = "WGNN_RANK_OUT";
/// A failure a rank simulates: `kill`, `panic`, `poison` or `disagree` (on the
/// shared-memory setting), by rank 1 at step 20.
const FAIL: &str = "WGNN_RANK_FAIL";
const STEPS: usize = 200;
/// Parameters of [`net`].
const PARAMS: u64 = 30 * 16 + 16 + 16 * 2 + 2;

/// Runs `rank_child` under `mpirun -np ranks` with `batch` rows per rank, writing
/// into a fresh folder; fails the test if the job runs past two minutes.
fn mpirun(ranks: usize, batch: usize, tag: &str, fail: Option<&str>) -> (PathBuf, std::process::Output) {
    mpirun_on("cpu", ranks, batch, tag, fail)
}

/// [`mpirun`] with the ranks on `device` (`cpu` or `gpu`).
fn mpirun_on(
    device: &str,
    ranks: usize,
    batch: usize,
    tag: &str,
    fail: Option<&str>,
) -> (PathBuf, std::process::Output) {
    let out = std::env::temp_dir().join(format!("wgnn-mpi-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let mut command = Command::new("mpirun");
    command
        .args(["--allow-run-as-root", "--oversubscribe", "-np", &ranks.to_string()])
        .args(["--mca", "btl", "self,tcp", "--mca", "btl_tcp_if_include", "lo"])
        .args(["--mca", "oob_tcp_if_include", "lo"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "distributed::rank_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(OUT, &out)
        .env("WGNN_RANK_BATCH", batch.to_string())
        .env("WGNN_RANK_DEVICE", device)
        .env("WGNN_RANK_SHARED", if tag == "b" { "0" } else { "1" })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(fail) = fail {
        command.env(FAIL, fail);
    }
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start mpirun (install openmpi-bin): {e}"));
    let started = Instant::now();
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        while started.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(200));
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return false;
            }
        }
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        true
    });
    let output = child.wait_with_output().unwrap();
    let hung = watchdog.join().unwrap();
    assert!(!hung, "mpirun -np {ranks} ({tag}) hung for two minutes and was killed");
    (out, output)
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

/// `step loss_bits weight_hash` lines → (global losses, weight hashes).
fn steps(text: &str) -> (Vec<f32>, Vec<String>) {
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f32::from_bits(f[1].parse().unwrap()), f[2].to_string())
        })
        .unzip()
}

fn floats(text: &str) -> Vec<f32> {
    text.split_whitespace()
        .map(|w| f32::from_bits(w.parse().unwrap()))
        .collect()
}

fn ok(output: &std::process::Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn two_ranks_stay_bit_identical_every_step_repeat_bit_for_bit_and_match_one_process_with_the_global_batch() {
    let (a, out_a) = mpirun(2, 16, "a", None);
    ok(&out_a, "the first 2-rank run");
    let (b, out_b) = mpirun(2, 16, "b", None);
    ok(&out_b, "the second 2-rank run");
    let (one, out_one) = mpirun(1, 32, "one", None);
    ok(&out_one, "the 1-rank run");

    // Every rank holds the same weights after every step (hashes of all bits).
    let rank0 = read(&a, "rank0.steps");
    assert_eq!(rank0.lines().count(), STEPS);
    assert_eq!(rank0, read(&a, "rank1.steps"), "the ranks' weights differ at some step");
    assert_eq!(read(&a, "rank0.weights"), read(&a, "rank1.weights"));
    // Two runs of 2 ranks, the first exchanging the gradients through a shared-memory
    // window, the second through MPI's all-gather: the same bits.
    assert_eq!(read(&a, "rank0.shared"), "true");
    assert_eq!(read(&b, "rank0.shared"), "false");
    assert_eq!(rank0, read(&b, "rank0.steps"), "two 2-rank runs differ");
    assert_eq!(read(&a, "rank0.weights"), read(&b, "rank0.weights"));
    assert_eq!(read(&a, "rank0.fit"), read(&b, "rank0.fit"));

    // The loss falls.
    let (two_losses, _) = steps(&rank0);
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let (first, last) = (mean(&two_losses[..10]), mean(&two_losses[STEPS - 10..]));
    assert!(last < 0.5 * first, "the loss did not fall: {first} -> {last}");

    // 2 ranks × 16 rows = 1 process × 32 rows, up to float rounding.
    let (one_losses, _) = steps(&read(&one, "rank0.steps"));
    let worst = two_losses
        .iter()
        .zip(&one_losses)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("2 ranks vs 1 process: largest per-step loss difference {worst:e} over {STEPS} steps");
    assert!(worst < 1e-5, "the 2-rank loss curve left the 1-process one by {worst}");
    let (wa, w1) = (floats(&read(&a, "rank0.weights")), floats(&read(&one, "rank0.weights")));
    let drift = wa.iter().zip(&w1).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    eprintln!("2 ranks vs 1 process: largest weight difference {drift:e} after {STEPS} steps");
    assert!(drift < 1e-4, "the 2-rank weights left the 1-process ones by {drift}");

    // fit: the same global history on both ranks, learning, and resumed bit for bit.
    let fit0 = read(&a, "rank0.fit");
    assert_eq!(fit0, read(&a, "rank1.fit"), "the ranks' fit histories differ");
    assert_eq!(fit0, read(&a, "rank0.resumed"), "the resumed distributed fit differs");
    assert_eq!(fit0, read(&a, "rank1.resumed"));
    let accuracy: f64 = fit0
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(accuracy > 0.9, "validation accuracy {accuracy} after distributed fit");

    // Federated learning with the clients spread over 2 ranks, and over 1: the same
    // bits on every rank as the simulated run in this process.
    let simulated = federated_run(None, &breast_cancer(), &Device::cpu());
    assert_eq!(
        read(&a, "rank0.federated"),
        simulated,
        "2 ranks vs the simulated federated run"
    );
    assert_eq!(read(&a, "rank1.federated"), simulated);
    assert_eq!(read(&one, "rank0.federated"), simulated, "1 rank vs the simulated run");
    for dir in [a, b, one] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The same on the GPU backend: every step's packed gradients are its only download.
#[test]
fn two_ranks_on_the_gpu_stay_bit_identical_and_match_the_cpu_ranks() {
    let _serial = super::serial();
    if super::common::gpu().is_none() {
        return;
    }
    let (gpu, output) = mpirun_on("gpu", 2, 16, "gpu", None);
    ok(&output, "the 2-rank GPU run");
    let rank0 = read(&gpu, "rank0.steps");
    assert_eq!(rank0.lines().count(), STEPS);
    assert_eq!(
        rank0,
        read(&gpu, "rank1.steps"),
        "the GPU ranks' weights differ at some step"
    );
    assert_eq!(read(&gpu, "rank0.fit"), read(&gpu, "rank1.fit"));
    let (cpu, output) = mpirun(2, 16, "gpu-vs-cpu", None);
    ok(&output, "the 2-rank CPU run");
    let (g, c) = (steps(&rank0).0, steps(&read(&cpu, "rank0.steps")).0);
    let worst = g.iter().zip(&c).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    eprintln!("2 GPU ranks vs 2 CPU ranks: largest per-step loss difference {worst:e}");
    assert!(worst < 1e-4, "the GPU ranks' loss curve left the CPU ranks' by {worst}");
    for dir in [gpu, cpu] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn a_rank_that_dies_or_fails_stops_the_whole_job_with_a_message_instead_of_hanging() {
    for (fail, says) in [
        ("kill", "exited on signal"),
        ("panic", "rank 1 of 2 failed: it panicked"),
        ("poison", "rank 1 of 2 failed: simulated failure at step 20"),
        // Rank 1 leaves the shared-memory window for the all-gather alone: the next
        // exchange fails on both ranks, naming the setting, instead of hanging.
        (
            "disagree",
            "call World::set_shared_memory with the same value on every rank",
        ),
    ] {
        let (dir, output) = mpirun(2, 16, fail, Some(fail));
        let _ = std::fs::remove_dir_all(dir);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{fail}: the job succeeded");
        assert!(stderr.contains(says), "{fail}: no '{says}' in:\n{stderr}");
    }
}

/// FNV-1a over the bits of every parameter.
fn weight_hash(values: &[f32]) -> String {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for v in values {
        for byte in v.to_bits().to_le_bytes() {
            h = (h ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn net(dev: &Device) -> Sequential {
    Sequential::new()
        .add(Linear::new(30, 16, dev))
        .add(nn::Tanh)
        .add(Linear::new(16, 2, dev))
}

fn all_weights(net: &Sequential) -> Vec<f32> {
    net.parameters().iter().flat_map(|p| p.to_vec().unwrap()).collect()
}

/// One rank of the tests above: a hand-written loop of 200 Adam steps on the
/// breast-cancer data, then `fit` with a checkpoint and a resumed `fit`.
#[test]
#[ignore = "a rank of the distributed tests, started by mpirun"]
fn rank_child() {
    let out = PathBuf::from(std::env::var(OUT).expect("started by the distributed tests"));
    let batch: usize = std::env::var("WGNN_RANK_BATCH").unwrap().parse().unwrap();
    let fail = std::env::var(FAIL).ok();
    let world = distributed::init().unwrap();
    let (rank, ranks) = (world.rank(), world.size());
    // The ranks on this host share its cores.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(
        wgnn::get_num_threads(),
        (cores / ranks).max(1),
        "rank {rank}'s CPU threads"
    );
    world.set_shared_memory(std::env::var("WGNN_RANK_SHARED").as_deref() != Ok("0"));
    std::fs::write(
        out.join(format!("rank{rank}.shared")),
        world.shares_memory().to_string(),
    )
    .unwrap();
    let dev = match std::env::var("WGNN_RANK_DEVICE").as_deref() {
        Ok("gpu") => Device::gpu().unwrap(),
        _ => Device::cpu(),
    };
    let data = breast_cancer();
    let (x, y) = data.tensors(&dev).unwrap();
    // Different seeds per rank: the optimizer's broadcast must make the replicas equal.
    wgnn::manual_seed(11 + rank as u64);
    let model = net(&dev);
    let adam = Adam::new(
        model.parameters(),
        AdamConfig {
            lr: 1e-2,
            ..Default::default()
        },
    );
    let mut opt = DistributedOptimizer::new(adam, world.clone()).unwrap();
    let mut loader = DataLoader::new(&x, &y, batch)
        .unwrap()
        .shuffle(3)
        .drop_last(true)
        .shard(rank, ranks)
        .unwrap();
    let mut lines = String::new();
    let mut step = 0;
    while step < STEPS {
        for b in loader.epoch(&dev) {
            let (xb, yb) = b.unwrap();
            let loss = nn::loss::cross_entropy(&model.forward(&xb), &yb);
            let before = dev.stats();
            wgnn::optim::Optimizer::step(&mut opt, &loss.backward().unwrap()).unwrap();
            let cost = dev.stats() - before;
            // In steady state a step of several ranks is two plans (and on the GPU one copy for the
            // readback). On the GPU the packed gradients (4 bytes per parameter, in a
            // buffer of 16-byte units) are its only download, and its uploads are the
            // averaged gradients, the batch and Adam's few per-step coefficients (the
            // CPU backend counts no transfers).
            let gpu = dev.kind() == wgnn::DeviceKind::Gpu;
            let batch_bytes = 4 * (xb.numel() + yb.numel()) as u64;
            if step > 0 && ranks > 1 {
                assert_eq!(cost.submits, 2 + u64::from(gpu), "step {step}: {cost:?}");
                assert!(
                    !gpu || cost.bytes_downloaded == (4 * PARAMS).next_multiple_of(16),
                    "step {step}: {cost:?}"
                );
                let extra = cost.bytes_uploaded.checked_sub(4 * PARAMS + batch_bytes);
                assert!(!gpu || extra.is_some_and(|e| e <= 64), "step {step}: {cost:?}");
            }
            if step > 0 && ranks == 1 {
                // One rank: the wrapped optimizer's single plan, nothing read back.
                assert_eq!((cost.submits, cost.bytes_downloaded), (1, 0), "step {step}: {cost:?}");
            }
            let mut global = [loss.item().unwrap()];
            distributed::all_reduce_sum(&world, &mut global).unwrap();
            let global = global[0] / ranks as f32;
            writeln!(
                lines,
                "{step} {} {}",
                global.to_bits(),
                weight_hash(&all_weights(&model))
            )
            .unwrap();
            step += 1;
            if rank == 1 && step == 20 {
                match fail.as_deref() {
                    Some("kill") => std::process::abort(),
                    Some("panic") => panic!("simulated panic at step 20"),
                    Some("poison") => {
                        world.poison("simulated failure at step 20");
                        return; // dropping the world stops the job
                    }
                    Some("disagree") => world.set_shared_memory(false),
                    _ => {}
                }
            }
            if step == STEPS {
                break;
            }
        }
    }
    let bits = |v: &[f32]| v.iter().map(|w| w.to_bits().to_string()).collect::<Vec<_>>().join(" ");
    std::fs::write(out.join(format!("rank{rank}.steps")), lines).unwrap();
    std::fs::write(out.join(format!("rank{rank}.weights")), bits(&all_weights(&model))).unwrap();

    // fit, 4 epochs straight; then 2 epochs with a checkpoint and a resumed run to 4.
    let fit = |epochs: usize, checkpoint: &Path, resume: Option<&Path>| {
        wgnn::manual_seed(5 + rank as u64);
        let model = net(&dev);
        let adam = Adam::new(
            model.parameters(),
            AdamConfig {
                lr: 1e-2,
                ..Default::default()
            },
        );
        let opt = DistributedOptimizer::new(adam, world.clone()).unwrap();
        let mut model = model.compile(opt, Loss::CrossEntropy, &[Metric::Accuracy]).unwrap();
        let callbacks: Vec<Box<dyn wgnn::train::Callback>> = vec![Box::new(ModelCheckpoint::every_epoch(checkpoint))];
        let config = FitConfig {
            epochs,
            batch_size: batch,
            validation_split: 0.2,
            seed: Some(9),
            callbacks,
            verbose: false,
            layer_stats: false,
            resume_from: resume.map(Path::to_path_buf),
            ..Default::default()
        };
        let history = model.fit(&x, &y, config).unwrap();
        let mut text = String::new();
        for e in 0..history.epochs() {
            let get = |k: &str| history.get(k).unwrap()[e];
            writeln!(
                text,
                "{} {} {} {}",
                get("loss"),
                get("accuracy"),
                get("val_accuracy"),
                get("val_loss")
            )
            .unwrap();
        }
        text
    };
    std::fs::write(
        out.join(format!("rank{rank}.fit")),
        fit(4, &out.join("straight.ckpt"), None),
    )
    .unwrap();
    let ckpt = out.join("half.ckpt");
    fit(2, &ckpt, None);
    world.barrier().unwrap(); // rank 0 has written the checkpoint
    let resumed = fit(4, &out.join("resumed.ckpt"), Some(&ckpt));
    std::fs::write(out.join(format!("rank{rank}.resumed")), resumed).unwrap();

    std::fs::write(
        out.join(format!("rank{rank}.federated")),
        federated_run(Some(&world), &data, &dev),
    )
    .unwrap();
}

/// FedProx with DP noise over 6 Dirichlet clients of the breast-cancer rows, 5 per
/// round (on 2 ranks: 3 and 2), 3 rounds: the final weights' bits and each round's
/// clients and test accuracy. `comm` spreads the clients over its ranks; each rank
/// starts from other weights (rank 0's are broadcast).
fn federated_run(comm: Option<&dyn Collective>, data: &wgnn::data::Dataset, dev: &Device) -> String {
    use wgnn::federated::{fed_avg, fed_avg_on, split_dirichlet, DpNoise, FedConfig};
    wgnn::manual_seed(21 + comm.map_or(0, |c| c.rank() as u64));
    let model = net(dev);
    let clients = split_dirichlet(&data.labels, 6, 1.0, 2).unwrap();
    let config = FedConfig {
        rounds: 3,
        clients_per_round: 5,
        local_epochs: 2,
        batch_size: 16,
        lr: 0.1,
        mu: 0.05,
        dp: Some(DpNoise { clip: 2.0, sigma: 0.05 }),
        shuffle: true,
        seed: 4,
    };
    let reports = match comm {
        Some(c) => fed_avg_on(c, &model, data, &clients, Some(data), &config),
        None => fed_avg(&model, data, &clients, Some(data), &config),
    }
    .unwrap();
    let mut text = String::new();
    for r in &reports {
        writeln!(
            text,
            "round {} clients {:?} accuracy {:?}",
            r.round, r.clients, r.test_accuracy
        )
        .unwrap();
    }
    let weights = all_weights(&model);
    writeln!(
        text,
        "{}",
        weights
            .iter()
            .map(|w| w.to_bits().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    )
    .unwrap();
    text
}
