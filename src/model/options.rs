//! The two choices a user makes about running a model: where ([`Runtime`]) and in which numeric
//! precision ([`Precision`]).
//!
//! Plain data with no dependencies: the config reads them, the model side acts on them, so the
//! config needs nothing else of the model.

use std::fmt;

use serde::Deserialize;

/// Numeric precision of a tower's ONNX graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Precision {
    /// 32-bit float weights and activations.
    #[serde(rename = "fp32")]
    Fp32,
    /// 16-bit float (for GPU runtimes).
    #[serde(rename = "fp16")]
    Fp16,
    /// Static int8: QuantizeLinear/DequantizeLinear pairs around float ops.
    #[serde(rename = "int8-qdq")]
    Int8Qdq,
    /// onnxruntime's dynamic int8: DynamicQuantizeLinear + MatMulInteger/ConvInteger.
    #[serde(rename = "int8-dynamic")]
    Int8Dynamic,
    /// Static int8 on integer kernels: QuantizeLinear with calibrated scales and zero points
    /// feeding MatMulInteger/ConvInteger (the dynamic form with its activation ranges fixed at
    /// quantization time; `models/tools/edgeclip_tools/bundle_tools.py`,
    /// `make_int8_static_integer`).
    #[serde(rename = "int8-static")]
    Int8Static,
}

impl Precision {
    /// The name used in `bundle.toml` and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8Qdq => "int8-qdq",
            Precision::Int8Dynamic => "int8-dynamic",
            Precision::Int8Static => "int8-static",
        }
    }

    /// Whether the graph computes in int8.
    pub fn is_int8(self) -> bool {
        matches!(
            self,
            Precision::Int8Qdq | Precision::Int8Dynamic | Precision::Int8Static
        )
    }

    /// Whether tract runs the graph's matrix products on its integer kernels (int8 x int8 ->
    /// int32: SDOT / SMLAL on Arm, VNNI / AMX / AVX2 on x86), rather than in float as it runs QDQ.
    pub fn on_integer_kernels(self) -> bool {
        matches!(self, Precision::Int8Dynamic | Precision::Int8Static)
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "fp16" => Ok(Precision::Fp16),
            "int8-qdq" => Ok(Precision::Int8Qdq),
            "int8-dynamic" => Ok(Precision::Int8Dynamic),
            "int8-static" => Ok(Precision::Int8Static),
            other => Err(format!(
                "unknown precision {other:?} (expected fp32, fp16, int8-qdq, int8-dynamic or int8-static)"
            )),
        }
    }
}

/// Where the image tower should run: `model.runtime` in the config, `--runtime` on the command
/// line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// CUDA when the driver and CUDA's libraries load, else the CPU (the choice and its reason
    /// are logged).
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA (Jetson, x86-64 GPUs); an error at start-up when unavailable.
    Cuda,
}

impl Runtime {
    /// The name used in the config file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Auto => "auto",
            Runtime::Cpu => "cpu",
            Runtime::Cuda => "cuda",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Runtime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Runtime::Auto),
            "cpu" => Ok(Runtime::Cpu),
            "cuda" => Ok(Runtime::Cuda),
            other => Err(format!(
                "unknown runtime {other:?} (expected auto, cpu or cuda)"
            )),
        }
    }
}
