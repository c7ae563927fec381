"""The catalog records de-identified instances once (redo-safe), groups them, and knows when a series is complete."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from pacslabel.catalog import repository
from pacslabel.catalog.service import LandedInstance, is_complete, record_instance, record_instances, series_overview
from pacslabel.db.base import utcnow


def _landed(sop: str, series: str = "2.25.2", study: str = "2.25.1", patient: str = "PSEUDO1",
            seconds: int = 0) -> LandedInstance:
    return LandedInstance(
        patient_id=patient, study_instance_uid=study, series_instance_uid=series, sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        attributes={"Modality": "CT", "BodyPartExamined": "CHEST", "Manufacturer": "ACME", "StudyDate": "20200101",
                    "SeriesDescription": "Thorax", "InstitutionName": None},
        orthanc_id=f"o-{sop}", series_orthanc_id="os", study_orthanc_id="ot", route="lung", source_ae="CT1",
        received_at=utcnow() - timedelta(seconds=seconds))


def test_instances_are_counted_once_and_series_complete_after_the_stable_time(db_session: Session) -> None:
    assert record_instance(db_session, _landed("2.25.10", seconds=30))
    assert record_instance(db_session, _landed("2.25.11", seconds=20))
    assert not record_instance(db_session, _landed("2.25.11", seconds=20))  # a redo after a crash
    assert record_instance(db_session, _landed("2.25.20", series="2.25.3", study="2.25.4"))
    db_session.commit()
    assert repository.counts(db_session) == {"patients": 1, "studies": 2, "series": 2, "instances": 3}
    series = repository.series_by_uid(db_session, "2.25.2")
    assert series is not None and series.instance_count == 2
    assert (series.modality, series.body_part, series.manufacturer, series.institution) == ("CT", "CHEST", "ACME",
                                                                                            None)
    assert series.last_received_at - series.first_received_at >= timedelta(seconds=9)
    assert is_complete(series, stable_s=15) and not is_complete(series, stable_s=60)
    overview = {s["series_instance_uid"]: s for s in series_overview(db_session, stable_s=15)}
    assert overview["2.25.2"]["complete"] and not overview["2.25.3"]["complete"]
    patient = repository.patient_of_study(db_session, "2.25.4")
    assert patient is not None and patient.pseudonym == "PSEUDO1"


def _landed_in(sop: str, series: str, seconds: int) -> LandedInstance:
    return LandedInstance(
        patient_id="PSEUDO1", study_instance_uid="2.25.1", series_instance_uid=series, sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2", attributes={"Modality": "CT"}, orthanc_id=f"o-{sop}",
        series_orthanc_id=None, study_orthanc_id=None, route="default", source_ae="CT1",
        received_at=utcnow() - timedelta(seconds=seconds))


def test_batch_recording_counts_each_instance_once_per_series(db_session: Session) -> None:
    batch = [_landed_in("2.25.10", "2.25.2", 30), _landed_in("2.25.11", "2.25.2", 10),
             _landed_in("2.25.11", "2.25.2", 10), _landed_in("2.25.20", "2.25.3", 5)]
    assert record_instances(db_session, batch) == 3  # the in-batch duplicate (a redo) is not counted
    assert record_instances(db_session, batch[:2]) == 0  # nor is a redone batch
    db_session.commit()
    assert repository.counts(db_session) == {"patients": 1, "studies": 1, "series": 2, "instances": 3}
    series = repository.series_by_uid(db_session, "2.25.2")
    assert series is not None and series.instance_count == 2
    assert series.last_received_at - series.first_received_at >= timedelta(seconds=19)
