"""The authors' side of the float64 comparison: their model, their losses and THEIR ``train()``
for 3 steps on CPU, everything recorded into one file for ``ours_side.py``.

Run with their repository (and transformers, for their schedule) on the path, nothing of theirs is
copied here:  ``PYTHONPATH=<deps>:<their repo> python authors_side.py dac|camp|sample4geo OUT.pt``
(README.md beside this file)."""

# ruff: noqa: E402  (imports follow the setup they depend on: a monkeypatch, a timm registration)

import sys
from argparse import Namespace

import torch
import torch.nn as nn

method, OUT = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
torch.set_default_dtype(torch.float64)
B, N_CLASSES, SIZE, STEPS, TOTAL = 4, 7, 384, 3, 10


class Recorder:
    """A stand-in GradScaler: truthy (selects their AMP branch), records the loss and the gradients
    at unscale_ (after backward, before their clipping)."""

    def __init__(self, model):
        self.model, self.losses, self.grads = model, [], []

    def __bool__(self):
        return True

    def scale(self, loss):
        self.losses.append(loss.detach().clone())
        return loss

    def unscale_(self, opt):
        self.grads.append({n: p.grad.detach().clone() for n, p in self.model.named_parameters() if p.grad is not None})

    def step(self, opt):
        opt.step()

    def update(self):
        pass


def no_dropout(model):
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0


from transformers import get_cosine_schedule_with_warmup

if method in ("dac", "camp"):
    import sample4geo.hand_convnext.ConvNext.make_model as mm
    from sample4geo.hand_convnext.ConvNext.backbones.model_convnext import ConvNeXt

    # a small FAIR ConvNeXt with the real last width (the heads need 1024), no download
    mm.create_model = lambda name, pretrained=True: ConvNeXt(depths=[1, 1, 1, 1], dims=[16, 32, 64, 1024])
    from sample4geo.hand_convnext.model import make_model

    opt = Namespace(views=2, nclasses=N_CLASSES, block=2, triplet_loss=0.3, resnet=False)
    if method == "camp":
        opt.__dict__.update(
            pos_scale=0.1,
            if_learn_ECE_weights=True,
            learn_weight_D_D=0.0,
            learn_weight_S_S=0.0,
            learn_weight_D_fine_D_fine=0.5,
            learn_weight_D_fine_S_fine=0.0,
            learn_weight_S_fine_S_fine=0.0,
        )
    model = make_model(opt)
else:
    from sample4geo.model import TimmModel

    model = TimmModel("convnext_atto", pretrained=False, img_size=SIZE)
model = model.double()
no_dropout(model)
state0 = {k: v.clone() for k, v in model.state_dict().items()}

g = torch.Generator().manual_seed(1)
batches = []
for _ in range(STEPS):
    sat, dro = torch.randn(B, 3, SIZE, SIZE, generator=g), torch.randn(B, 3, SIZE, SIZE, generator=g)
    labels = torch.randperm(N_CLASSES, generator=g)[:B]
    batches.append((sat, dro, labels))

ce = nn.CrossEntropyLoss(label_smoothing=0.1)
record = {"method": method, "state0": state0, "batches": batches}
# --- eval embeddings and train-mode outputs + each loss term at the initial weights
model.eval()
with torch.no_grad():
    out = model(batches[0][0])
    record["eval_embedding"] = (out[-2] if isinstance(out, tuple) else out).clone()
model.train()
sat, dro, labels = batches[0]
if method == "dac":
    from sample4geo.loss.cal_loss import cal_loss
    from sample4geo.loss.DSA_loss import DSA_loss
    from sample4geo.loss.loss import InfoNCE

    o1, o2 = model(sat, dro)
    record["train_outputs"] = {"aligned_sat": o1[0], "aligned_drone": o2[0], "gap_sat": o1[-2], "cls_sat": o1[1]}
    record["terms"] = {
        "loss_infonce": InfoNCE(ce, device="cpu")(o1[-2], o2[-2], model.logit_scale.exp()),
        "loss_ce": cal_loss(o1[1], labels, nn.CrossEntropyLoss()) + cal_loss(o2[1], labels, nn.CrossEntropyLoss()),
        "loss_dsa": DSA_loss(ce, device="cpu")(o1[0], o2[0], model.logit_scale.exp()),
    }
    loss_functions = {"infoNCE": InfoNCE(ce, device="cpu"), "DSA_loss": DSA_loss(ce, device="cpu")}
    cfg = Namespace(
        verbose=False,
        device="cpu",
        handcraft_model=True,
        gpu_ids=(0,),
        weight_infonce=1.0,
        weight_cls=0.1,
        weight_dsa=0.6,
        clip_grad=100.0,
        scheduler="cosine",
    )
elif method == "camp":
    from sample4geo.loss.blocks_infoNCE import blocks_InfoNCE, get_heartmap_pool
    from sample4geo.loss.blocks_mse import blocks_mse
    from sample4geo.loss.loss import InfoNCE

    o1, o2 = model(sat, dro)
    parts1 = get_heartmap_pool(o1[-1].flatten(2).transpose(1, 2), 3)
    record["train_outputs"] = {
        "positioned_sat": o1[-1],
        "gap_sat": o1[-2],
        "parts_sat": torch.cat([parts1[:, :, i] for i in range(3)], -1),
    }
    w = [model.w_blocks1, model.w_blocks2, model.w_blocks3]
    bn = blocks_InfoNCE(ce, device="cpu")
    record["terms"] = {
        "loss_infonce": InfoNCE(ce, device="cpu")(o1[-2], o2[-2], model.logit_scale.exp()),
        "loss_part_mse": blocks_mse(device="cpu")(o1[-1], o2[-1], model.logit_scale_blocks.exp(), w, 3),
        "loss_blocks_satellite": bn(o1[-1], o1[-1], model.logit_scale_blocks.exp(), w, 3),
        "loss_blocks_drone": bn(o2[-1], o2[-1], model.logit_scale_blocks.exp(), w, 3),
    }
    loss_functions = {
        "infoNCE": InfoNCE(ce, device="cpu"),
        "blocks_infoNCE": bn,
        "blocks_mse": blocks_mse(device="cpu"),
    }
    cfg = Namespace(
        verbose=False,
        device="cpu",
        handcraft_model=True,
        gpu_ids=(0,),
        infoNCE_logit=3.65,
        blocks_for_PPB=3,
        if_learn_ECE_weights=True,
        if_use_plus_1=False,
        if_use_multiply_1=True,
        only_DS=False,
        only_fine=True,
        DS_and_fine=False,
        weight_D_S=1.0,
        weight_D_fine_S_fine=1.0,
        clip_grad=100.0,
        scheduler="cosine",
    )
else:
    from sample4geo.loss import InfoNCE

    f1, f2 = model(sat, dro)
    record["terms"] = {"loss_infonce": InfoNCE(ce, device="cpu")(f1, f2, model.logit_scale.exp())}
    loss_functions = InfoNCE(ce, device="cpu")
    cfg = Namespace(verbose=False, device="cpu", gpu_ids=(0,), clip_grad=100.0, scheduler="cosine")
record["terms"] = {k: v.detach() for k, v in record["terms"].items()}
record["train_outputs"] = {
    k: (v.detach() if torch.is_tensor(v) else [t.detach() for t in v])
    for k, v in record.get("train_outputs", {}).items()
}

# --- THEIR trainer, 3 steps of a 10-step cosine schedule with 10 % warm-up
model.load_state_dict(state0)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
scheduler = get_cosine_schedule_with_warmup(optimizer, num_training_steps=TOTAL, num_warmup_steps=TOTAL * 0.1)
scaler = Recorder(model)
from sample4geo.trainer import train

if method == "sample4geo":
    loader = [(s, d, lab) for s, d, lab in batches]
    lrs = []
    train(cfg, model, loader, loss_functions, optimizer, scheduler=scheduler, scaler=scaler)
else:
    loader = [(s, d, lab, lab) for s, d, lab in batches]
    train(
        cfg,
        model,
        loader,
        loss_functions,
        optimizer,
        1,
        len(loader),
        tensorboard=None,
        scheduler=scheduler,
        scaler=scaler,
    )
record["step_losses"] = scaler.losses
record["step_grads"] = scaler.grads
record["state_after"] = {k: v.clone() for k, v in model.state_dict().items()}
record["params_after"] = {n: p.detach().clone() for n, p in model.named_parameters()}
torch.save(record, OUT)
print(method, "losses", [float(v) for v in scaler.losses])
