"""A minimal, sourced price table for the footer (the full catalog is issue 5's).

Every figure carries its provider, date and source (see ../shared/pricing-sources.md).  The `cpu`
device has no price: it is shown as $0 with "no price configured", never as a GPU price.
"""
from __future__ import annotations

from dataclasses import dataclass

MODAL = ("Modal", "2026-10-04", "https://modal.com/pricing")
AWS = ("AWS us-east-1 on-demand, per GPU", "2026-01-21", "https://instances.vantage.sh")


@dataclass(frozen=True)
class Price:
    gpu: str
    serverless_per_s: float
    serverless_provider: str
    serverless_as_of: str
    serverless_source: str
    dedicated_per_h: float
    dedicated_provider: str
    dedicated_as_of: str
    dedicated_source: str
    note: str = ""

    def as_dict(self) -> dict:
        return {
            "serverless_per_s": self.serverless_per_s,
            "dedicated_per_h": self.dedicated_per_h,
            "provider": self.serverless_provider,
            "as_of": self.serverless_as_of,
            "source": self.serverless_source,
            "dedicated_provider": self.dedicated_provider,
            "dedicated_as_of": self.dedicated_as_of,
            "dedicated_source": self.dedicated_source,
            "note": self.note,
        }


def _p(gpu, per_s, per_h, note=""):
    return Price(gpu, per_s, *MODAL, per_h, *AWS, note)


# serverless: Modal list price per second; dedicated: AWS on-demand instance price / GPUs
PRICES = {
    p.gpu: p
    for p in (
        _p("T4", 0.000164, 0.526, "dedicated: g4dn.xlarge (whole VM)"),
        _p("L4", 0.000222, 0.805, "dedicated: g6.xlarge (whole VM)"),
        _p("A10", 0.000306, 1.006, "dedicated: g5.xlarge (whole VM)"),
        _p("L40S", 0.000542, 1.861, "dedicated: g6e.xlarge (whole VM)"),
        _p("A100", 0.000583, 2.745, "A100 40GB; dedicated: p4d.24xlarge / 8"),
        _p("A100-80GB", 0.000694, 3.431, "dedicated: p4de.24xlarge / 8"),
        _p("H100", 0.001097, 6.88, "dedicated: p5.4xlarge (1 GPU)"),
        _p("H200", 0.001261, 7.91, "dedicated: p5en.48xlarge / 8"),
        _p("B200", 0.001736, 14.24, "dedicated: p6-b200.48xlarge / 8"),
        Price("cpu", 0.0, "none", "", "", 0.0, "none", "", "", "no price configured for the cpu device"),
    )
}


def price_for(gpu: str) -> Price:
    return PRICES.get(gpu) or Price(gpu, 0.0, "none", "", "", 0.0, "none", "", "", f"no price known for {gpu}")
