"""MEAN: a shared (siamese) ConvNeXt backbone with the PEE, GEE and CEA branches.

Train mode returns a :class:`MEANOutput` for the losses; eval mode returns only the L2-normalised
retrieval embedding, as the released model does (the branches are training-only, spec §4).
Branches whose loss weight is zero are not built, and what a zero-weighted term alone would train is
frozen before fitting (:mod:`mean_geo.training.untrained`), so DDP needs no ``find_unused_parameters``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mean_geo.errors import ConfigError
from mean_geo.models.backbone import DEFAULT_BACKBONE, TimmBackbone
from mean_geo.models.cea import CrossDomainEnhancedAlignment
from mean_geo.models.depthwise import use_fast_depthwise
from mean_geo.models.finetune import apply_finetune
from mean_geo.models.gee import GlobalExtensionEmbedding
from mean_geo.models.pee import ProgressiveExtensionEmbedding
from mean_geo.models.registry import register_architecture
from mean_geo.models.small_maps import use_small_map_conv

PEE_MODES = ("released", "multiscale")


Features = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (fmap, pooled, embedding)


@dataclass
class MEANOutput:
    """What the losses need from one view."""

    embedding: torch.Tensor  # (B, D) retrieval embedding before L2-normalisation (InfoNCE input)
    logits: list[torch.Tensor] = field(default_factory=list)  # GEE heads: [local_1, local_2, global], (B, K)
    aligned: torch.Tensor | None = None  # CEA output (B, 512, H·W), CDA input (DAC: DSA, (B, C + 256, H·W))
    parts: torch.Tensor | None = None  # CAMP: heat-sorted part blocks (B, blocks·C), its block losses' input


@register_architecture("mean")
class MEAN(nn.Module):
    """Multi-Level Embedding and Alignment Network (Chen, Yang & Rong, TGRS 2025), as released.

    A timm backbone with three branches: PEE (the retrieval embedding), GEE (identity classifiers,
    training only) and CEA (cross-view alignment, training only).

    Args:
        num_classes: training places, the GEE classifiers' classes.
        backbone: a timm model name (the paper's ``convnext_tiny.fb_in22k_ft_in1k``).
        pretrained: load the backbone's weights through timm (hub cache).
        weights_file: load them from this local file instead.
        use_gee: build the GEE branch (its loss weight is above 0).
        use_cea: build the CEA branch (its loss weight is above 0).
        pee: ``released`` (InfoNCE on the backbone embedding) or ``multiscale`` (the paper's text).
        double_softmax: CEA's released calibration (a second softmax); false: one softmax.
        channel_axis_heads: GEE's released classifier bottleneck; false: a linear bottleneck.
        num_local: GEE's local heads (plus one global).
        cea_proj_dim: CEA's projection width.
        cea_out_dim: CEA's output width.
        fast_depthwise: a faster CPU backward of the depthwise convolutions (same maths).
        fast_small_maps: convolutions on at most 2×2 maps as unfold + matmul on CPU (same maths).
        pooling: the backbone's pooled vector: ``auto`` (the class token for DINOv2/DINOv3 ViTs, as
            their authors; the average elsewhere), ``token``, ``avg`` or ``gem``.
        finetune: ``full``, ``frozen`` or ``lora`` (:mod:`mean_geo.models.finetune`).
        trainable_blocks: with ``frozen``/``lora``, the backbone's last k blocks train fully.
        lora: ``{r, alpha, dropout, targets}`` of ``finetune=lora``.
        grad_checkpointing: recompute the backbone's activations in the backward pass (memory).

    Raises:
        ConfigError: an unknown ``pee``, or GEE with fewer than 2 places.
    """

    #: the sub-modules the retrieval embedding depends on: what exports keep and fingerprints hash
    #: (the GEE/CEA branches only train); a subclass that adds to the embedding path extends this
    retrieval_parts: tuple[str, ...] = ("backbone", "pee")
    #: the layout of the authors' released checkpoints this class loads (mean_geo.models.official)
    official_layout: str = "mean"
    #: run the satellite view's branches first, as the authors' ``model(query=satellite, reference=drone)``
    #: does: their BatchNorm running statistics then update in the same order (Sample4Geo, DAC, CAMP).
    #: MEAN keeps drone first: its dropout draws would change order, and today's numbers with them.
    satellite_branches_first: bool = False

    def __init__(
        self,
        num_classes: int,
        backbone: str = DEFAULT_BACKBONE,
        pretrained: bool = False,
        weights_file: str | None = None,
        use_gee: bool = True,
        use_cea: bool = True,
        pee: str = "released",
        double_softmax: bool = True,
        channel_axis_heads: bool = True,
        num_local: int = 2,
        cea_proj_dim: int = 256,
        cea_out_dim: int = 512,
        fast_depthwise: bool = True,
        fast_small_maps: bool = True,
        pooling: str = "auto",
        finetune: str = "full",
        trainable_blocks: int = 0,
        lora: dict[str, Any] | None = None,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if pee not in PEE_MODES:
            raise ConfigError(f"model.pee={pee!r}: expected one of {list(PEE_MODES)}")
        if use_gee and num_classes < 2:
            raise ConfigError(f"num_classes={num_classes}: the GEE heads need at least 2 training locations")
        self.num_classes = num_classes
        self.backbone = TimmBackbone(backbone, pretrained, weights_file, pooling)
        if fast_depthwise:  # ConvNeXt's 7x7 depthwise convs: same maths, 1.5x faster bf16 CPU training step
            use_fast_depthwise(self.backbone)
        dim = self.backbone.num_features
        self.embedding_dim = dim
        self.pee = ProgressiveExtensionEmbedding(self.backbone.stage_channels, dim) if pee == "multiscale" else None
        self.gee = GlobalExtensionEmbedding(dim, num_classes, num_local, channel_axis_heads) if use_gee else None
        self.cea = CrossDomainEnhancedAlignment(dim, cea_proj_dim, cea_out_dim, double_softmax) if use_cea else None
        if fast_small_maps:  # convs with ≤ 2x2 outputs (a ResNet's last stage at 64 px): 2.3x faster CPU training
            use_small_map_conv(self)
        # how much of the backbone trains (the branches above always do), and its activation memory
        apply_finetune(self.backbone.net, finetune, trainable_blocks, lora)
        self.finetune = finetune
        if grad_checkpointing:
            self.backbone.net.set_grad_checkpointing(True)

    def input_needs(self) -> tuple[int, str]:
        """The smallest square input this model runs at, and why.

        Checked before any work (:func:`mean_geo.models.input_size.check_image_size`): the last
        feature map must have a cell, and the backbone's downsampling a pixel to work on.

        Returns:
            (the smallest side in pixels, the reason in words).
        """
        reduction = self.backbone.reduction
        return reduction, f"{self.backbone.name} reduces its input {reduction}x: its last feature map needs one cell"

    @property
    def per_sample_backbone(self) -> bool:
        """True when the backbone has no batch statistics (ConvNeXt: LayerNorm only).

        Then running both views through it as one batch is exactly two separate passes.
        """
        return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.backbone.modules())

    def forward_pair(self, drone: torch.Tensor, satellite: torch.Tensor) -> tuple[MEANOutput, MEANOutput]:
        """Training outputs of both views.

        Backbone features (:meth:`features_pair`), then the branches per view, whose BatchNorms keep
        per-view statistics as in the reference's two calls.
        """
        d, s = self.features_pair(drone, satellite)
        return self.branches_pair(d, s)

    def branches_pair(self, drone: Features, satellite: Features) -> tuple[MEANOutput, MEANOutput]:
        """Both views' training outputs from their backbone features, in the class's view order."""
        if self.satellite_branches_first:
            s = self.branches(*satellite)
            return self.branches(*drone), s
        return self.branches(*drone), self.branches(*satellite)

    def features_pair(self, drone: torch.Tensor, satellite: torch.Tensor) -> tuple[Features, Features]:
        """``(fmap, pooled, embedding)`` of both views.

        One backbone pass over the 2B images when that is exact (no batch statistics in the
        backbone): better GEMM efficiency.
        """
        if not self.per_sample_backbone or drone.shape[1:] != satellite.shape[1:]:
            return self.features(drone), self.features(satellite)
        fmap, pooled, embedding = self.features(torch.cat([drone, satellite]))
        b = drone.shape[0]
        return (fmap[:b], pooled[:b], embedding[:b]), (fmap[b:], pooled[b:], embedding[b:])

    def branches(self, fmap: torch.Tensor, pooled: torch.Tensor, embedding: torch.Tensor) -> MEANOutput:
        """The training-only outputs of one view from its backbone features (GEE logits, CEA maps)."""
        return MEANOutput(
            embedding=embedding,
            logits=self.gee(fmap, pooled) if self.gee is not None else [],
            aligned=self.cea(fmap) if self.cea is not None else None,
        )

    def features(self, x: torch.Tensor) -> Features:
        """Backbone feature map, pooled vector and retrieval embedding (before L2 normalisation).

        The test-time path; a subclass that changes the embedding overrides this.
        """
        if self.pee is None:
            fmap, pooled = self.backbone(x)
            return fmap, pooled, pooled
        fmap, pooled, stages = self.backbone(x, return_stages=True)
        return fmap, pooled, self.pee(stages, pooled)

    def forward(self, x: torch.Tensor) -> MEANOutput | torch.Tensor:
        """``(B, 3, H, W)`` → MEANOutput (train) or the L2-normalised embedding ``(B, D)`` (eval)."""
        fmap, pooled, embedding = self.features(x)
        if not self.training:
            return F.normalize(embedding.float(), dim=-1)
        return self.branches(fmap, pooled, embedding)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised retrieval embedding whatever the module's mode (keeps the mode unchanged)."""
        was_training = self.training
        self.eval()
        try:
            return self(x)
        finally:
            self.train(was_training)


def retrieval_embedding(model: MEAN, images: torch.Tensor, flip_tta: bool = False) -> torch.Tensor:
    """The L2-normalised retrieval embedding of an eval-mode model.

    Evaluation, indexing, localizing and challenge submissions all embed through this.

    Args:
        model: a MEAN (or subclass) in eval mode.
        images: ``(B, 3, H, W)``, normalised as the model expects.
        flip_tta: sum the image's and its mirror image's embeddings before the normalisation (the
            University-1652 lineage's test-time augmentation).

    Returns:
        ``(B, D)`` unit vectors.
    """
    if not flip_tta:
        return model(images)
    summed = model.features(images)[2].float() + model.features(images.flip(-1))[2].float()
    return F.normalize(summed, dim=-1)
