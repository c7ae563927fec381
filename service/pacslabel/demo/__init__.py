"""Synthetic demo and test studies (CT, MR, a burned-in Secondary Capture) with a ground-truth manifest."""

from pacslabel.demo.synthetic import (
    BurnedInText,
    DemoInstance,
    DemoLesion,
    DemoPatient,
    DemoSeries,
    DemoSet,
    DemoStudy,
    count_instances,
    generate_demo_studies,
)

__all__ = [
    "BurnedInText",
    "DemoInstance",
    "DemoLesion",
    "DemoPatient",
    "DemoSeries",
    "DemoSet",
    "DemoStudy",
    "count_instances",
    "generate_demo_studies",
]
