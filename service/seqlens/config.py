"""Server settings: CLI flags and ``SEQLENS_<NAME>`` environment variables, one field each."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Max |ONNX Runtime - torch| on probe inputs for a version to be READY (also seqlens build's check).
PARITY_TOLERANCE = 1e-4


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEQLENS_", extra="ignore", protected_namespaces=())

    # --- network -------------------------------------------------------------------
    model_repository: Path | None = Field(
        None, description="Model repository folder; default: the demo repository (built on first use).")
    host: str = Field("127.0.0.1", description="Interface for the gRPC server (0.0.0.0 in containers).")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port (0 = pick a free one).")
    metrics_port: int = Field(9090, ge=-1, le=65535,
                              description="Prometheus /metrics port (0 = pick a free one, -1 = off).")
    workers: int = Field(
        0, ge=0, description="Server processes sharing the gRPC port (SO_REUSEPORT), each with its own models and "
                             "event loop, one merged /metrics. 0 = one per 2 CPUs this container may use (cgroup "
                             "quota aware); 1 = a single process.")
    reuse_port: bool = Field(
        False, description="Bind the gRPC port with SO_REUSEPORT so that several seqlens processes share it "
                           "(each with its own models, metrics and drain).")
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest gRPC message accepted.")
    health_port: int = Field(
        -1, ge=-1, le=65535,
        description="Extra plaintext listener serving only grpc.health.v1 (-1 = off): Kubernetes' native "
                    "gRPC probes cannot speak TLS, so TLS deployments probe this port.")
    max_connection_age_s: float = Field(
        300.0, ge=0, description="Close client connections after this age (0 = never) so that dns:/// "
                                 "round-robin clients re-resolve and spread over new replicas.")
    cache_dir: Path | None = Field(
        None, description="Cache folder for the demo repository (SEQLENS_CACHE_DIR; default ~/.cache/seqlens).")

    # --- security ------------------------------------------------------------------
    tls_cert: Path | None = Field(None, description="PEM server certificate (enables TLS with tls_key).")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert.")
    tls_client_ca: Path | None = Field(None, description="PEM CA bundle; when set, clients must present a cert (mTLS).")
    auth_token_file: Path | None = Field(
        None, description="File of accepted bearer tokens, one a line; reloaded when it changes.")
    auth_token: str | None = Field(None, description="A single accepted bearer token (env only).")

    # --- models --------------------------------------------------------------------
    poll_interval_s: float = Field(2.0, ge=0, description="Repository rescan interval; 0 disables polling.")
    parity_tolerance: float = Field(PARITY_TOLERANCE, gt=0,
                                    description="Max |ONNX - torch| on probe inputs for READY.")
    max_length: int = Field(4096, ge=1, description="Server-wide cap on sequence length (models may set less).")
    max_batch: int = Field(256, ge=1, description="Most sequences in one Predict/ModelInfer request.")
    # Custom graphs (architecture.kind: onnx): what model.onnx may ask of the replay (docs/custom-graphs.md).
    graph_max_nodes: int = Field(20_000, ge=1, description="Custom graphs: most nodes, subgraphs included.")
    graph_max_initializer_bytes: int = Field(1 << 30, ge=1,
                                             description="Custom graphs: most bytes of initializers and constants.")
    graph_max_depth: int = Field(4, ge=0, description="Custom graphs: deepest nesting of Loop/Scan/If bodies.")
    graph_max_loop_iterations: int = Field(
        1 << 20, ge=1, description="Custom graphs: most loop iterations per run (nested trip counts multiplied).")

    # --- runtimes and batching -----------------------------------------------------
    # Defaults from `bench/bench_predict.py --threads` on the 2-core VM (docs: ops notes). ONNX
    # Runtime: 2 workers x 1 intra-op thread match 1 x 2 threads at batch >= 8 (54k vs 56k seq/s at
    # 32) and never spin-wait on a busy machine (2 spinning threads ran batch 128 3x slower there).
    # torch: 2 threads are 1.3x faster on an idle machine but up to 100x slower when the cores are
    # shared, and the second core belongs to predictions: 1.
    onnx_threads: int = Field(1, ge=1, description="ONNX Runtime intra-op threads per session.")
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads (process-wide) for gradient work.")
    predict_workers: int = Field(2, ge=1, description="Threads running ONNX Runtime batches (batches at once).")
    explain_workers: int = Field(1, ge=1, description="Threads running gradient work (explanations).")
    explain_threads: int = Field(
        0, ge=0, description="Threads one explanation may use while no other gradient work runs or waits (its "
                             "gradient rows split across them; under load each explanation uses one). 0 = the "
                             "CPUs this container may use (affinity and cgroup quota).")
    batch_max_size: int = Field(64, ge=1, description="Dynamic batcher: most sequences per collected batch.")
    batch_max_delay_ms: float = Field(
        0.0, ge=0, description="Dynamic batcher: longest a sequence waits for a fuller batch while a worker is "
                               "free (batches also form while workers are busy, so 0 loses no throughput).")
    batch_max_queue: int = Field(
        1024, ge=1, description="Dynamic batcher: queued sequences per version before requests get "
                                "RESOURCE_EXHAUSTED.")
    batch_bucket_overhead_steps: int = Field(
        32, ge=0, description="Dynamic batcher: padded timesteps one extra ONNX Runtime call is worth; a "
                              "collected batch is split by length where padding would cost more (0 = never).")
    explain_max_queue: int = Field(64, ge=1, description="Explanations waiting for a worker before shedding load.")

    # --- explanations --------------------------------------------------------------
    max_explain_work: int = Field(4_000_000, ge=1,
                                  description="Per request: steps x length x samples summed over methods.")
    max_steps: int = Field(1024, ge=1, description="Most integration steps or samples per method.")
    gradient_chunk_elements: int = Field(
        4_000_000, ge=1, description="Memory bound: most (rows x T x E) elements per forward+backward chunk.")
    max_state_elements: int = Field(2_000_000, ge=1, description="Largest hidden/cell matrices returned.")

    # --- stateful sequences (docs/stateful.md) --------------------------------------
    max_live_sequences: int = Field(10_000, ge=1, description="Server-held sequences alive at once, all models; "
                                                              "more starts get RESOURCE_EXHAUSTED.")
    sequence_idle_timeout_s: float = Field(
        300.0, gt=0, description="A server-held sequence without a chunk for this long is evicted (its next chunk "
                                 "gets FAILED_PRECONDITION).")
    max_sequence_state_bytes: int = Field(256 * 1024 * 1024, ge=1,
                                          description="Bytes of state all live sequences may hold together.")

    # --- lifecycle -----------------------------------------------------------------
    drain_grace_s: float = Field(20.0, ge=0, description="On SIGTERM: seconds in-flight calls may take to finish.")
    drain_quiet_s: float = Field(
        0.2, ge=0, description="On SIGTERM, after in-flight calls finished: stop only once no call has arrived "
                               "for this long (calls in transit get UNAVAILABLE, not cut); within drain_grace_s.")
    log_level: str = Field("INFO", description="Python logging level.")
    log_json: bool = Field(True, description="Structured JSON logs (one object a line).")
