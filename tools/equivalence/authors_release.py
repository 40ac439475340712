"""A release of the authors' code, real-shaped: their own classes with ConvNeXt-Base (random init),
saved from ``nn.DataParallel`` (every key ``module.``), and their eval embedding of two 384 px
images (float32) beside it, for ``check_release.py``.

``PYTHONPATH=<deps>:<their repo> python authors_release.py dac|camp|sample4geo OUT.pth``"""

import sys
from argparse import Namespace

import torch

method, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
if method in ("dac", "camp"):
    import sample4geo.hand_convnext.ConvNext.make_model as mm
    from sample4geo.hand_convnext.ConvNext.backbones.model_convnext import ConvNeXt

    mm.create_model = lambda name, pretrained=True: ConvNeXt(depths=[3, 3, 27, 3], dims=[128, 256, 512, 1024])
    from sample4geo.hand_convnext.model import make_model

    opt = Namespace(
        views=2,
        nclasses=701,
        block=2,
        triplet_loss=0.3,
        resnet=False,
        pos_scale=0.6,
        if_learn_ECE_weights=True,
        learn_weight_D_D=0.0,
        learn_weight_S_S=0.0,
        learn_weight_D_fine_D_fine=0.5,
        learn_weight_D_fine_S_fine=1.0,
        learn_weight_S_fine_S_fine=0.0,
    )
    model = make_model(opt)
else:
    from sample4geo.model import TimmModel

    model = TimmModel("convnext_base.fb_in22k_ft_in1k_384", pretrained=False, img_size=384)
model = torch.nn.DataParallel(model).eval()
x = torch.randn(2, 3, 384, 384, generator=torch.Generator().manual_seed(3))
with torch.no_grad():
    y = model.module(x)
    emb = y[-2] if isinstance(y, tuple) else y
torch.save(model.state_dict(), out)  # keys: module.*
torch.save({"x": x, "emb": torch.nn.functional.normalize(emb, dim=-1)}, out + ".io")
print(method, len(model.state_dict()), "keys;", sum(p.numel() for p in model.parameters()) / 1e6, "M params")
