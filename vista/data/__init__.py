"""LLaVA-JSON data for training: records (:mod:`.records`), the dataset (:mod:`.dataset`), collation
(:mod:`.collate`) and the modality/length sampler (:mod:`.sampler`); image preprocessing is :mod:`vista.images`.

The names below are the public API (``from vista.data import LlavaJsonDataset``).
"""

from vista.data.collate import DataCollatorForVista
from vista.data.dataset import CHECK_IMAGES, LlavaJsonDataset, image_tokens_per_image, process_images
from vista.data.records import (
    REASONS,
    BadSampleError,
    DataFileError,
    SkipReport,
    check_image_file,
    load_records,
    parse_record,
    read_text,
)
from vista.data.sampler import ModalityLengthGroupedSampler, modality_length_grouped_indices
from vista.images import IMAGE_ASPECTS

__all__ = [
    "CHECK_IMAGES",
    "IMAGE_ASPECTS",
    "REASONS",
    "BadSampleError",
    "DataCollatorForVista",
    "DataFileError",
    "LlavaJsonDataset",
    "ModalityLengthGroupedSampler",
    "SkipReport",
    "check_image_file",
    "image_tokens_per_image",
    "load_records",
    "modality_length_grouped_indices",
    "parse_record",
    "process_images",
    "read_text",
]
