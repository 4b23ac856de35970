//! Choosing where tensors live: `--device auto|cpu|cuda|cuda:N|metal`.

use crate::{Error, Result};
use candle_core::Device;
use std::str::FromStr;

/// A device request as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceRequest {
    /// CUDA if compiled in and present, else Metal, else CPU.
    #[default]
    Auto,
    /// The CPU (`cpu`).
    Cpu,
    /// CUDA device with this ordinal (`cuda` = `cuda:0`).
    Cuda(usize),
    /// Apple's Metal GPU (`metal`, `mps`), if compiled in.
    Metal,
}

impl FromStr for DeviceRequest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            "metal" | "mps" => Ok(Self::Metal),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n.parse().map(Self::Cuda).map_err(|_| {
                    Error::config("device", format!("`{s}`: expected cuda:N with N a number"))
                }),
                None => Err(Error::config(
                    "device",
                    format!("`{s}`: expected auto, cpu, cuda, cuda:N or metal"),
                )),
            },
        }
    }
}

impl std::fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Metal => write!(f, "metal"),
        }
    }
}

impl DeviceRequest {
    /// Resolves the request to a candle [`Device`].
    ///
    /// Asking for a backend this binary was built without is an error naming the cargo
    /// feature to enable.
    pub fn device(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Auto => {
                if candle_core::utils::cuda_is_available() {
                    if let Ok(d) = Device::new_cuda(0) {
                        return Ok(d);
                    }
                }
                if candle_core::utils::metal_is_available() {
                    if let Ok(d) = Device::new_metal(0) {
                        return Ok(d);
                    }
                }
                Ok(Device::Cpu)
            }
            Self::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(Error::Device(format!(
                        "`device` cuda:{n}: this binary was built without CUDA; rebuild with \
                         `--features cuda` (and a CUDA toolkit), or use `device` cpu"
                    )));
                }
                #[cfg(feature = "cuda")]
                check_cuda_ordinal(n, cuda_device_count())?;
                Device::new_cuda(n)
                    .map_err(|e| Error::Device(format!("`device` cuda:{n}: cannot open it: {e}")))
            }
            Self::Metal => {
                if !candle_core::utils::metal_is_available() {
                    return Err(Error::Device(
                        "`device` metal: this binary was built without Metal; rebuild with \
                         `--features metal` (macOS), or use `device` cpu"
                            .into(),
                    ));
                }
                Device::new_metal(0)
                    .map_err(|e| Error::Device(format!("`device` metal: cannot open it: {e}")))
            }
        }
    }
}

/// The number of CUDA devices the driver sees, or why it cannot say.
#[cfg(feature = "cuda")]
fn cuda_device_count() -> std::result::Result<usize, String> {
    candle_core::cuda_backend::cudarc::driver::CudaContext::device_count()
        .map(|n| n.max(0) as usize)
        .map_err(|e| e.to_string())
}

/// `--device cuda:n` against what the driver reports: an error naming the devices there are,
/// instead of the driver's bare `CUDA_ERROR_INVALID_DEVICE`.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn check_cuda_ordinal(n: usize, count: std::result::Result<usize, String>) -> Result<()> {
    match count {
        Err(e) => Err(Error::Device(format!(
            "`device` cuda:{n}: the CUDA driver could not be initialised ({e}); is an NVIDIA \
             driver installed and a GPU visible (nvidia-smi)? Or use --device cpu"
        ))),
        Ok(0) => Err(Error::Device(format!(
            "`device` cuda:{n}: the CUDA driver sees no GPU on this machine; use `device` cpu"
        ))),
        Ok(count) if n >= count => Err(Error::Device(format!(
            "`device` cuda:{n}: this machine has {count} CUDA device{} ({}); use one of those \
             or `device` cpu",
            if count == 1 { "" } else { "s" },
            if count == 1 {
                "cuda:0".to_string()
            } else {
                format!("cuda:0 … cuda:{}", count - 1)
            }
        ))),
        Ok(_) => Ok(()),
    }
}

/// The device the device-taking tests run on: `NEKA_TEST_DEVICE`, parsed like `--device`
/// (`cpu` when unset). `NEKA_TEST_DEVICE=cuda:0 cargo test --features cuda` runs the parity
/// fixtures and the device tests on the GPU with the CPU's tolerances (`scripts/gpu_check.sh`).
pub fn test_device() -> Result<Device> {
    match std::env::var("NEKA_TEST_DEVICE") {
        Ok(s) if !s.trim().is_empty() => s
            .parse::<DeviceRequest>()
            .map_err(|e| Error::config("NEKA_TEST_DEVICE", e.to_string()))?
            .device(),
        _ => Ok(Device::Cpu),
    }
}

/// A short human name for a device ("cpu", "cuda:0", "metal").
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests() {
        assert_eq!(
            "auto".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Auto
        );
        assert_eq!("CPU".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cpu);
        assert_eq!(
            "cuda".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Cuda(0)
        );
        assert_eq!(
            "cuda:3".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Cuda(3)
        );
        assert!("cuda:x".parse::<DeviceRequest>().is_err());
        assert!("tpu".parse::<DeviceRequest>().is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_in_a_cpu_build_names_the_feature() {
        let err = DeviceRequest::Cuda(0).device().unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }

    #[test]
    fn a_missing_cuda_ordinal_names_the_devices_there_are() {
        let err = check_cuda_ordinal(7, Ok(1)).unwrap_err().to_string();
        assert!(
            err.contains("cuda:7") && err.contains("1 CUDA device (cuda:0)"),
            "{err}"
        );
        let err = check_cuda_ordinal(2, Ok(2)).unwrap_err().to_string();
        assert!(err.contains("cuda:0 … cuda:1"), "{err}");
        let err = check_cuda_ordinal(0, Ok(0)).unwrap_err().to_string();
        assert!(err.contains("no GPU"), "{err}");
        let err = check_cuda_ordinal(0, Err("CUDA_ERROR_NO_DEVICE".into()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CUDA_ERROR_NO_DEVICE") && err.contains("nvidia-smi"),
            "{err}"
        );
        assert!(check_cuda_ordinal(1, Ok(2)).is_ok());
    }

    #[test]
    fn auto_falls_back_to_something() {
        let d = DeviceRequest::Auto.device().unwrap();
        if !candle_core::utils::cuda_is_available() && !candle_core::utils::metal_is_available() {
            assert!(d.is_cpu());
        }
    }
}
