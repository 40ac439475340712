"""The MEAN paper's baselines as architectures of the same framework: Sample4Geo, DAC and CAMP.

One lineage (peers: ``../shared/research/peers.md``; deviations: docs/methods.md): Sample4Geo is a
timm ConvNeXt trained with InfoNCE alone; DAC adds the MCCG heads (triplet attention, three
classifiers) and domain space alignment; CAMP is DAC without the alignment, with a learnable
position embedding and heat-sorted part blocks for its block losses.  All three embed, at test
time, exactly as MEAN does as released: the backbone's pooled, LayerNorm'ed vector, L2-normalised.
So each is a :class:`~mean_geo.models.mean.MEAN` whose training branches differ, and training,
gradient caching, evaluation, export, index and localize treat them alike.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from mean_geo.errors import ConfigError
from mean_geo.models.attention_heads import TripletAttentionHeads
from mean_geo.models.dsa import DomainSpaceAlignment
from mean_geo.models.mean import MEAN, MEANOutput
from mean_geo.models.parts import PositionEmbedding, heat_sorted_blocks
from mean_geo.models.registry import register_architecture
from mean_geo.models.small_maps import use_small_map_conv

#: Sample4Geo's backbone: timm's 384 px ImageNet-22k → 1k ConvNeXt-Base
SAMPLE4GEO_BACKBONE = "convnext_base.fb_in22k_ft_in1k_384"
#: DAC's and CAMP's: FAIR's 224 px 22k → 1k ConvNeXt-Base checkpoint (timm's name for it)
DAC_BACKBONE = "convnext_base.fb_in22k_ft_in1k"


@register_architecture("sample4geo")
class Sample4Geo(MEAN):
    """Sample4Geo (Deuser, Habel & Oswald, ICCV 2023): the backbone alone, trained with InfoNCE.

    Args:
        num_classes: training places (only used if a loss asks for MEAN's GEE heads).
        backbone: a timm model name (the authors' ``convnext_base.fb_in22k_ft_in1k_384``).
        use_gee: MEAN's GEE heads (off: Sample4Geo has none).
        use_cea: MEAN's CEA branch (off: Sample4Geo has none).
        **kwargs: MEAN's other arguments (``pretrained``, ``weights_file``, ``fast_depthwise``, …).
    """

    official_layout = "sample4geo"
    satellite_branches_first = True

    def __init__(
        self,
        num_classes: int = 1,
        backbone: str = SAMPLE4GEO_BACKBONE,
        use_gee: bool = False,
        use_cea: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, backbone, use_gee=use_gee, use_cea=use_cea, **kwargs)


#: method=dino's default: DINOv2 ViT-B/14 (CVCities' University-1652 backbone); any DINOv2/DINOv3 name works
DINO_BACKBONE = "vit_base_patch14_dinov2.lvd142m"


@register_architecture("dino")
class DINO(Sample4Geo):
    """A DINO foundation backbone alone, its pooled vector the embedding, trained with InfoNCE.

    DINOv2 or DINOv3 (ViTs, registers, ``.sat493m``, ConvNeXts); the class token by default, as the
    DINO authors retrieve; ``model.finetune=full|frozen|lora`` picks how much of it trains.

    Args:
        num_classes: training places (only used if a loss asks for MEAN's GEE heads).
        backbone: a timm model name (default :data:`DINO_BACKBONE`).
        **kwargs: MEAN's other arguments (``pooling``, ``finetune``, ``lora``, ``grad_checkpointing``, …).
    """

    def __init__(self, num_classes: int = 1, backbone: str = DINO_BACKBONE, **kwargs: Any) -> None:
        super().__init__(num_classes, backbone, **kwargs)


@register_architecture("dac")
class DAC(MEAN):
    """DAC (IEEE TCSVT 2024; SummerpanKing/DAC): ConvNeXt-Base, triplet-attention heads and DSA, as released.

    ``gee`` holds the three classifier heads (:class:`TripletAttentionHeads`) and ``cea`` the
    domain space alignment (:class:`DomainSpaceAlignment`): the attribute names MEAN's losses and
    gradient caching read, so DAC trains through the same code.

    Args:
        num_classes: training places, the heads' classes (the authors: 701 / 200).
        backbone: a timm model name (the authors' 224 px ``convnext_base.fb_in22k_ft_in1k``).
        pretrained: load the backbone's weights through timm (hub cache).
        weights_file: load them from this local file instead.
        use_gee: build the classifier heads (their loss weight is above 0).
        use_cea: build the DSA branch (its loss weight is above 0).
        head_dropout: the classifier blocks' dropout (0.5).
        dsa_hidden: the DSA projection's hidden width (null: 2 × the backbone's width, 2048).
        dsa_dim: the DSA assignments' width (256).
        fast_depthwise: a faster CPU backward of the depthwise convolutions (same maths).
        fast_small_maps: convolutions on at most 2×2 maps as unfold + matmul on CPU (same maths).
        pooling: the backbone's pooling (MEAN's ``pooling``).
        finetune: how much of the backbone trains (MEAN's ``finetune``; the heads always train).
        trainable_blocks: MEAN's ``trainable_blocks``.
        lora: MEAN's ``lora``.
        grad_checkpointing: MEAN's ``grad_checkpointing``.

    Raises:
        ConfigError: heads with fewer than 2 places.
    """

    official_layout = "dac"
    satellite_branches_first = True

    def __init__(
        self,
        num_classes: int,
        backbone: str = DAC_BACKBONE,
        pretrained: bool = False,
        weights_file: str | None = None,
        use_gee: bool = True,
        use_cea: bool = True,
        head_dropout: float = 0.5,
        dsa_hidden: int | None = None,
        dsa_dim: int = 256,
        fast_depthwise: bool = True,
        fast_small_maps: bool = True,
        pooling: str = "auto",
        finetune: str = "full",
        trainable_blocks: int = 0,
        lora: dict[str, Any] | None = None,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__(
            num_classes,
            backbone,
            pretrained,
            weights_file,
            use_gee=False,
            use_cea=False,
            fast_depthwise=fast_depthwise,
            fast_small_maps=False,
            pooling=pooling,
            finetune=finetune,
            trainable_blocks=trainable_blocks,
            lora=lora,
            grad_checkpointing=grad_checkpointing,
        )
        if use_gee and num_classes < 2:
            raise ConfigError(f"num_classes={num_classes}: the classifier heads need at least 2 training locations")
        dim = self.embedding_dim
        self.gee = TripletAttentionHeads(dim, num_classes, head_dropout) if use_gee else None
        self.cea = DomainSpaceAlignment(dim, dsa_hidden or 2 * dim, dsa_dim) if use_cea else None
        if fast_small_maps:
            use_small_map_conv(self)


@register_architecture("camp")
class CAMP(DAC):
    """CAMP (IEEE TGRS 2024; Mabel0403/CAMP): DAC's model without DSA, with CAMP's position-aware partition.

    The position embedding is added to the last map in training (the pooled retrieval embedding is
    taken before it, as released, so it changes the embedding only through training), and the
    positioned map's heat-sorted part blocks are the :attr:`MEANOutput.parts` its losses read.
    The classifier heads are built only when a loss uses them: CAMP's own loss does not (its
    released model computes them and leaves them out of the loss).

    Args:
        num_classes: training places (the heads' classes, if built).
        backbone: a timm model name (DAC's ``convnext_base.fb_in22k_ft_in1k``).
        use_gee: build DAC's classifier heads (off: CAMP's loss has no CE).
        use_cea: build DAC's DSA branch (off: CAMP has none).
        position_grid: the position embedding's side (12: a 384 px input).
        position_scale: the learnable scale's start (0.6 University-1652, 0.1 SUES-200).
        part_blocks: how many heat-sorted part blocks (3).
        **kwargs: DAC's other arguments (``pretrained``, ``weights_file``, ``head_dropout``, …).

    Raises:
        ConfigError: fewer than 1 part block or grid cell.
    """

    official_layout = "camp"

    def __init__(
        self,
        num_classes: int = 1,
        backbone: str = DAC_BACKBONE,
        use_gee: bool = False,
        use_cea: bool = False,
        position_grid: int = 12,
        position_scale: float = 0.6,
        part_blocks: int = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, backbone, use_gee=use_gee, use_cea=use_cea, **kwargs)
        if part_blocks < 1 or position_grid < 1:
            raise ConfigError(f"model.part_blocks={part_blocks}, model.position_grid={position_grid}: expected >= 1")
        self.position = PositionEmbedding(self.embedding_dim, position_grid, position_scale)
        self.part_blocks = part_blocks

    def input_needs(self) -> tuple[int, str]:
        """As many cells of the last feature map as part blocks: ``reduction · ⌈√blocks⌉`` pixels."""
        reduction = self.backbone.reduction
        side = reduction * math.ceil(math.sqrt(self.part_blocks))
        base, why = super().input_needs()
        if side <= base:
            return base, why
        return (
            side,
            f"CAMP's {self.part_blocks} part blocks need as many cells of the last feature map ({reduction}x reduced)",
        )

    def branches(self, fmap: torch.Tensor, pooled: torch.Tensor, embedding: torch.Tensor) -> MEANOutput:
        """The heads (if built) on the positioned map, and its part blocks."""
        positioned = self.position(fmap)
        out = super().branches(positioned, pooled, embedding)
        out.parts = heat_sorted_blocks(positioned, self.part_blocks)
        return out
