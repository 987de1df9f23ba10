"""``vista train``: one stage of the LLaVA-1.5 two-stage recipe, with or without VISTA, from a YAML config.

    vista train --config reproduce/configs/<preset>/<stage>.yaml [key.sub=value ...] [--dry-run [--world-size N]]

A config names a ``preset`` (``tiny``, ``llava-1.5-7b``, ``tinyllava-3b``; see :mod:`vista.presets`) and a ``stage``
(``pretrain`` = stage 1, ``finetune`` = stage 2) and overrides what it needs; ``variant`` picks the loss
(``baseline``, ``vista``, ``vista-cosine``). Dotted ``key=value`` arguments override anything
(``variant=baseline training.learning_rate=2e-4 model.vision_tower=/path``). Strings may use ``{preset}``,
``{variant}`` and ``{stage}``. ``training`` holds ``transformers.TrainingArguments`` fields plus
``global_batch_size`` (gradient accumulation is derived from it and the world size) and ``resume_from_checkpoint``
(``auto``: the last checkpoint of ``output_dir`` if there is one; ``true``: it must exist; or a path).

``--dry-run`` prints the resolved plan - model parts, trainable parameters per stage (counted on the meta device,
nothing downloaded), data counts, global batch for ``--world-size``, DeepSpeed stage, the paper's hyperparameters
next to this run's - and exits. Runs under ``deepspeed`` and ``torchrun`` (one or many nodes): the launchers set
``WORLD_SIZE``/``RANK``. Without a launcher, a DeepSpeed config runs as a single process.

Written to ``training.output_dir``: HF-format checkpoints (``checkpoint-N/``, then the final model and processor),
tensorboard logs (``runs/``), and ``vista_run.json`` (git commit, package versions, world size, precision,
effective global batch, the resolved config, the VISTA config and the conversation template name), also copied
into every ``checkpoint-N/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any

import yaml

from vista.errors import DATA_ERROR, DataError, UsageError, UserError, one_line, positive_float, positive_int
from vista.run_metadata import RUN_FILE, run_metadata, write_run_file
from vista.train_config import (
    ConfigError,
    batch_plan,
    deepspeed_path,
    deepspeed_stage,
    load_config,
    vista_config_from,
    world_size_from_env,
)
from vista.train_plan import data_verdict, format_plan, memory_section, plan
from vista.train_schema import EXTRA_TRAINING_KEYS

logger = logging.getLogger("vista.train")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that the OS reports free now, for a rendezvous (``MASTER_PORT``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ensure_distributed_env(uses_deepspeed: bool) -> None:
    """Without a launcher, DeepSpeed still needs a (single-process) rendezvous."""
    if not uses_deepspeed or "WORLD_SIZE" in os.environ:
        return
    os.environ.update(
        RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port())
    )


def training_arguments(config: dict[str, Any], world_size: int):
    """``transformers.TrainingArguments`` for a resolved config (create before the model: ZeRO-3 needs it)."""
    import torch
    from transformers import TrainingArguments

    training = dict(config["training"])
    for key in (*EXTRA_TRAINING_KEYS, "resume_from_checkpoint"):  # not TrainingArguments fields
        training.pop(key, None)
    training.update(batch_plan(config["training"], world_size))
    training.pop("world_size")
    training.pop("global_batch_size")
    ratio = config["training"].get("warmup_ratio")
    if ratio:
        if training.get("warmup_steps"):
            raise ConfigError("training.warmup_ratio and training.warmup_steps are both set; keep one")
        if not 0 <= ratio < 1:
            raise ConfigError(f"training.warmup_ratio={ratio} must be in [0, 1)")
        training["warmup_steps"] = float(ratio)  # transformers v5: a float in [0, 1) is a ratio of the steps
    path = deepspeed_path(training.get("deepspeed"))
    training["deepspeed"] = str(path) if path else None
    # transformers v5 renamed gradient checkpointing to activation checkpointing; the config keeps the usual name.
    checkpointing = training.pop("gradient_checkpointing", None)
    checkpointing_kwargs = training.pop("gradient_checkpointing_kwargs", None)
    if checkpointing is not None and training.get("activation_checkpointing") is None:
        training["activation_checkpointing"] = checkpointing
    if training.get("activation_checkpointing") and not training.get("activation_checkpointing_kwargs"):
        training["activation_checkpointing_kwargs"] = checkpointing_kwargs or {"use_reentrant": False}
    training["logging_nan_inf_filter"] = False  # a non-finite loss stops the run (VistaTrainer)
    training["average_tokens_across_devices"] = False  # the loss is a per-micro-batch mean
    if not torch.cuda.is_available():
        if not training["deepspeed"]:
            training["use_cpu"] = True  # accelerate's CPU mode: bf16 autocast, multi-CPU over gloo
        else:
            _configure_cpu_deepspeed_state()
            training["accelerator_config"] = {"use_configured_state": True}
            # With the configured DeepSpeed state, use_cpu only lifts transformers' GPU-only bf16 check (the CPU
            # runs then use DeepSpeed's bf16 path, as on GPUs); without it bf16 + DeepSpeed is refused on CPU.
            training["use_cpu"] = True
    return TrainingArguments(**training)


def _configure_cpu_deepspeed_state() -> None:
    """Several CPU processes under DeepSpeed (tests, CPU clusters).

    accelerate only knows DeepSpeed with an accelerator backend (nccl, ...): on CPU it finds no backend and
    reports a single process, so DeepSpeed's batch arithmetic fails. Initialise DeepSpeed's communication over gloo
    and record the real world size in accelerate's shared state; TrainingArguments then reuses that state.
    """
    import deepspeed
    import torch
    from accelerate import PartialState
    from accelerate.utils import DistributedType

    deepspeed.init_distributed(dist_backend="gloo")
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        state = PartialState()
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]
    state.backend = "gloo"
    state.num_processes = torch.distributed.get_world_size()
    state.process_index = torch.distributed.get_rank()
    state.local_process_index = int(os.environ.get("LOCAL_RANK", "0"))
    state.distributed_type = DistributedType.DEEPSPEED


def _resume_target(value: Any, output_dir: str) -> str | bool | None:
    from transformers.trainer_utils import get_last_checkpoint

    if value in (None, False, "no"):
        return None
    last = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
    if value == "auto":
        return last
    if value is True or value == "last":
        if last is None:
            raise ConfigError(
                f"training.resume_from_checkpoint={value!r} but {output_dir} has no checkpoint-N folder"
            )
        return last
    return str(value)


def check_output_dir(training: dict[str, Any]) -> None:
    """Refuse to train into a folder that holds a finished run, unless told to overwrite or resume it.

    Raises:
        ConfigError: ``training.output_dir`` has a ``vista_run.json`` with status ``finished`` and neither
            ``training.overwrite_output_dir`` (``--overwrite``) nor ``training.resume_from_checkpoint`` is set.
    """
    output_dir = Path(training["output_dir"])
    run_file = output_dir / RUN_FILE
    if training.get("overwrite_output_dir") or training.get("resume_from_checkpoint") not in (
        None,
        False,
        "no",
    ):
        return
    try:
        status = json.loads(run_file.read_text()).get("status") if run_file.is_file() else None
    except (OSError, json.JSONDecodeError):
        status = None
    if status == "finished":
        raise ConfigError(
            f"training.output_dir={output_dir} holds a finished run ({run_file}); pass --overwrite to replace it, "
            f"training.resume_from_checkpoint=auto to continue it, or choose another training.output_dir=..."
        )
    if status is not None:
        logger.warning(
            "%s holds an unfinished run (status %r); starting over. To continue it instead: "
            "training.resume_from_checkpoint=auto",
            output_dir,
            status,
        )


def _apply_lora(model, lora: dict[str, Any]):
    from peft import LoraConfig, get_peft_model

    targets = "|".join(re.escape(t) for t in lora["target_modules"])
    peft_config = LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=rf".*language_model.*\.({targets})",  # the LM only, never the vision tower
        modules_to_save=["multi_modal_projector"],
    )
    return get_peft_model(model, peft_config)


def build_dataset(data: dict[str, Any], processor, objectives: dict[str, Any] | None = None):
    """The ``LlavaJsonDataset`` a ``data`` config section describes (validated up front, see ``vista.data``)."""
    from vista.data import LlavaJsonDataset
    from vista.objectives import l2t_template, objectives_config_from
    from vista.templates import get_template

    return LlavaJsonDataset(
        data["json"],
        data["image_folder"],
        processor,
        l2t_template(get_template(data["template"]), objectives_config_from(objectives).l2t),
        data["max_length"],
        on_bad_sample=data["on_bad_sample"],
        image_aspect=data["image_aspect"],
        check_images=data["check_images"],
    )


def train(config: dict[str, Any]) -> Path:
    """Run one stage; returns the output folder holding the final HF-format model, processor and run file."""
    from transformers import set_seed
    from transformers.trainer_callback import TrainerCallback

    from vista import builder
    from vista.data import DataCollatorForVista
    from vista.objective_trainer import ObjectivesTrainer
    from vista.objectives import ObjectivesRuntime, objectives_config_from
    from vista.trainer import check_sorted_micro_batches, sampling_options

    if config["model"].get("pretrained"):  # any HF vision-language family (issue 15)
        from vista.any_vlm import train_any

        return train_any(config)
    training = config["training"]
    if not config["data"]["json"] or not Path(config["data"]["json"]).is_file():
        raise ConfigError(f"data.json: {config['data']['json']} not found (relative to {Path.cwd()})")
    check_output_dir(training)
    _ensure_distributed_env(bool(training["deepspeed"]))
    world_size = world_size_from_env()
    check_sorted_micro_batches(config["data"]["sorted_micro_batches"], world_size)  # before loading the model
    args = training_arguments(config, world_size)  # before the model: sets up ZeRO-3 partitioned loading
    zero_stage = deepspeed_stage(args.deepspeed)
    source = builder.resolve_source(config["model"])
    if zero_stage == 3 and source == "components":
        raise ConfigError(
            "building from separate components under ZeRO-3 is not supported: run stage 1 with ZeRO-2 (the paper's "
            "recipe) and start stage 2 from its checkpoint (model.checkpoint=...)"
        )
    set_seed(args.seed)
    dtype = builder.resolve_dtype(config["model"]["dtype"], bf16=training["bf16"])
    model, processor = builder.build_model(config["model"], dtype=dtype, seed=args.seed)
    processor.tokenizer.model_max_length = config["data"]["max_length"]
    model.config.use_cache = False
    top_layers = config["model"]["finetune_top_layers"]
    builder.freeze_for_stage(model, config["stage"], top_layers)
    if config["lora"]["enabled"]:
        model = _apply_lora(model, config["lora"])
    parameters = builder.parameter_report(model)
    trains = " + ".join(builder.STAGE_TRAINS[config["stage"]])
    if top_layers is not None:
        trains = f"the LM's last {top_layers} decoder layers and final norm"
    logger.info(
        "stage %s trains %s (vision tower frozen)%s:\n%s",
        config["stage"],
        trains,
        " with LoRA on the LM" if config["lora"]["enabled"] else "",
        builder.format_parameter_report(parameters),
    )

    dataset = build_dataset(config["data"], processor, config["objectives"])
    if len(dataset) == 0:
        report = dataset.skip_report()
        raise DataError(
            f"no usable records in {config['data']['json']}: all {report.num_records} skipped "
            f"({dict(report.counts)}); fix the data (see the reasons) or point data.json at another file"
        )
    metadata = run_metadata(config, args, parameters, len(dataset))

    class RunFileCallback(TrainerCallback):
        def on_save(self, cb_args, state, control, **kwargs):
            if state.is_world_process_zero:
                write_run_file(Path(cb_args.output_dir) / f"checkpoint-{state.global_step}", metadata)

    try:  # before the Trainer: the VIRAL projector must be part of the model it wraps
        runtime = ObjectivesRuntime(model, objectives_config_from(config["objectives"]), seed=args.seed)
    except (ValueError, FileNotFoundError) as error:  # a layer out of range, a teacher folder that is not one
        raise ConfigError(f"objectives: {one_line(error)}") from None
    trainer = ObjectivesTrainer(
        runtime=runtime,
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=DataCollatorForVista(processor, num_image_tokens=dataset.num_image_tokens),
        processing_class=processor,
        vista_config=vista_config_from(config),
        **sampling_options(config["data"]),
        callbacks=[RunFileCallback()],
    )
    if trainer.is_world_process_zero():
        write_run_file(args.output_dir, {**metadata, "status": "running"})
    result = trainer.train(
        resume_from_checkpoint=_resume_target(training.get("resume_from_checkpoint"), args.output_dir)
    )
    if config["lora"]["enabled"]:
        trainer.model = trainer.model.merge_and_unload()  # save a plain LLaVA that every loader understands
        trainer.model_wrapped = trainer.model
    trainer.save_model(args.output_dir)
    if trainer.is_world_process_zero():
        processor.save_pretrained(args.output_dir)
        trainer.state.save_to_json(str(Path(args.output_dir) / "trainer_state.json"))  # the full log history
        skip_report = dataset.skip_report().to_dict()
        final = {
            **metadata,
            "status": "finished",
            "train_metrics": result.metrics,
            "data_skip_report": skip_report,
        }
        write_run_file(args.output_dir, final)
    leave_together(trainer)
    return Path(args.output_dir)


def leave_together(trainer) -> None:
    """End of a ``vista train`` run on every rank, after rank 0 has written the model.

    A barrier runs after every collective still queued on this rank (e.g. ZeRO-3's gathers for the save), so none is
    pending when the process group is torn down (without it a non-saving rank of a 2-process ZeRO-3 CPU run sometimes
    aborted at exit, exit 250). The CLI then destroys the process group and frees DeepSpeed's CPU all-reduce buffer
    (:func:`release_deepspeed_shm_buffer`)."""
    trainer.accelerator.wait_for_everyone()


def release_deepspeed_shm_buffer(shm: Path = Path("/dev/shm")) -> Path | None:
    """Unlink this rank's DeepSpeed CPU all-reduce buffer; the unlinked path, or None if there was none.

    DeepSpeed's CPU communication (``deepspeed/ops/csrc/cpu/comm/shm.cpp``) creates one ~69 MB shared-memory file per
    rank, ``deepspeed_allreduce_buffer_<uid>_<MASTER_ADDR>_<MASTER_PORT>_<rank>``, and never removes it: every
    multi-process CPU run (the test suite's, ``paper_presets_cpu.py``) would hold that RAM until reboot
    (deepspeedai/DeepSpeed#4115). Called when ``vista train`` exits: after the last barrier on success (no rank opens
    the file again, and unlinking keeps the mappings of ranks still exiting valid), and on an error or Ctrl-C too
    (the launcher then stops the other ranks). A SIGKILL/SIGTERM still leaves the file. GPU runs have no such file.
    """
    addr, port, rank = (os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT", "RANK"))
    if not (addr and port and rank):
        return None
    path = shm / f"deepspeed_allreduce_buffer_{os.getuid()}_{addr}_{port}_{rank}"
    if not path.exists():
        return None
    path.unlink()
    return path


# ------------------------------------------------------------------------------------------------------------ CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, help="YAML config, e.g. reproduce/configs/tiny/pretrain.yaml"
    )
    parser.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. variant=baseline training.seed=1"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the resolved plan and exit")
    parser.add_argument(
        "--world-size",
        type=positive_int,
        default=None,
        help="processes to plan the global batch for (--dry-run)",
    )
    parser.add_argument(
        "--gpu-memory",
        type=positive_float,
        default=None,
        metavar="GB",
        help="memory of one GPU (--dry-run): adds a fits / does-not-fit verdict and the nearest setting that fits",
    )
    parser.add_argument("--print-config", action="store_true", help="also print the resolved config as YAML")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a finished run in training.output_dir (same as training.overwrite_output_dir=true)",
    )
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    overrides = [*args.overrides, *(["training.overwrite_output_dir=true"] if args.overwrite else [])]
    try:
        config = load_config(args.config, overrides)
        if args.dry_run and config["model"].get(
            "pretrained"
        ):  # issue 15: the plan covers the LLaVA recipe only
            raise UsageError(
                "--dry-run plans the LLaVA recipe; it does not cover model.pretrained=... yet: run without --dry-run "
                "(the stage-freezing table is printed at start-up)"
            )
        if args.dry_run:
            world_size = args.world_size or world_size_from_env()
            planned = plan(config, world_size)
            print(format_plan(planned))
            print(memory_section(config, world_size, args.gpu_memory))
            if args.print_config:
                print("\nresolved config:\n" + yaml.safe_dump(config, sort_keys=False))
            if verdict := data_verdict(planned["data"]):
                print(f"vista train: --dry-run: the run would stop: {verdict}", file=sys.stderr)
                return DATA_ERROR
            return 0
        if args.world_size is not None or args.gpu_memory is not None:
            raise UsageError(
                "--world-size and --gpu-memory plan a run (--dry-run); a training run takes its world size from the "
                "launcher (deepspeed --num_gpus N / torchrun --nproc_per_node N)"
            )
        if args.print_config:
            print(yaml.safe_dump(config, sort_keys=False))
        output = train(config)
    except UserError as error:
        print(f"vista train: {one_line(error)}", file=sys.stderr)
        return error.exit_code
    except Exception as error:
        from vista.data import BadSampleError
        from vista.trainer import NonFiniteLossError

        if isinstance(error, (NonFiniteLossError, BadSampleError)):
            print(f"vista train: stopped: {one_line(error)}", file=sys.stderr)
            return 3
        raise
    finally:
        _destroy_process_group()
        release_deepspeed_shm_buffer()  # on every exit path this process controls (not SIGKILL/SIGTERM)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"vista train: finished; model, processor and {RUN_FILE} in {output}")
    _exit_cpu_rank_now()
    return 0


def _exit_cpu_rank_now() -> None:
    """End a finished rank of a multi-process CPU run here, without interpreter shutdown.

    Even after the final barrier and ``destroy_process_group``, a rank of a 2-process ZeRO-3 CPU run sometimes aborts
    in C++ teardown after everything is written ("terminate called without an active exception", exit 250; about
    one test-suite run in four on 2026-11-30), and the launcher then reports the finished run as failed. The model,
    its run file and the logs are written and flushed by now; ``os._exit`` skips only the teardown. GPU runs and
    single-process runs return normally."""
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.cuda.is_available():
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _destroy_process_group() -> None:
    """Tear down the launcher's process group before exit. Left to interpreter shutdown, a rank of a 2-process
    ZeRO-3 CPU run aborted after saving more often ("terminate called without an active exception", exit 250); the
    remaining cases are why a finished CPU rank then ends with :func:`_exit_cpu_rank_now`."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
