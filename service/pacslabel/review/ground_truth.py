"""Ground truth from clinical outcomes: an admin imports a CSV of answers to the protocol's classification
questions, keyed by pseudonymous patient ID or by *original* accession number; the answers override the
consensus of the items they name (FinalSource.GROUND_TRUTH, with the file name, line and importer kept).

Two layouts, told apart by the header (column names are case-insensitive):

* long: one key column plus ``question`` and ``answer``: ``accession,question,answer``;
* wide: one key column plus one column per protocol question id: ``patient,malignant,grade`` (an empty cell
  is no answer).

The key column is ``patient`` (also ``patient_id``, ``pseudonym``): the pseudonymous PatientID the readers
see, matching every item of that patient in the project; or ``accession`` (also ``accession_number``): the
original AccessionNumber, matching the items of that study. An original accession is never stored: it is
turned into the keyed HMAC the de-identification wrote (``deid.pseudonyms``, key from the settings) and found
through ``catalog_studies.accession_key``.

The whole file is checked before anything is written; every bad row is reported with its line number.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from pacslabel.audit.service import record
from pacslabel.catalog.models import CatalogPatient, CatalogStudy
from pacslabel.db.base import utcnow
from pacslabel.deid.pseudonyms import Pseudonymizer
from pacslabel.errors import BadInput
from pacslabel.projects.models import Project, ProjectItem
from pacslabel.projects.service import project_spec
from pacslabel.review.models import FinalSource, GroundTruthAnswer, GroundTruthImport
from pacslabel.users.models import User

MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_ROWS = 100_000
MAX_ERRORS_SHOWN = 20
PATIENT_COLUMNS = ("patient", "patient_id", "pseudonym")
ACCESSION_COLUMNS = ("accession", "accession_number")


@dataclass(frozen=True)
class OutcomeRow:
    """One answer of one key, as read from the file (``line`` counts the header as line 1)."""

    line: int
    key_kind: str  # "patient" | "accession"
    key: str
    question: str
    answer: str


@dataclass(frozen=True)
class ImportResult:
    import_id: int
    file_name: str
    rows: int
    answers: int
    item_ids: list[int]


# --- reading -------------------------------------------------------------------------------------------------


def _decode(data: bytes) -> str:
    if len(data) > MAX_FILE_BYTES:
        raise BadInput(f"the outcomes file is {len(data)} bytes; at most {MAX_FILE_BYTES} are accepted")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BadInput(f"the outcomes file is not UTF-8 text (byte {error.start} cannot be decoded)") from None
    if "\x00" in text:
        raise BadInput("the outcomes file contains NUL bytes; it is not a CSV text file")
    if not text.strip():
        raise BadInput("the outcomes file is empty; it needs a header line and at least one row")
    return text


def _key_column(header: list[str]) -> tuple[int, str]:
    found = [(i, "patient") for i, name in enumerate(header) if name in PATIENT_COLUMNS]
    found += [(i, "accession") for i, name in enumerate(header) if name in ACCESSION_COLUMNS]
    if len(found) != 1:
        raise BadInput(
            f"line 1: the header needs exactly one key column, one of "
            f"{', '.join(PATIENT_COLUMNS + ACCESSION_COLUMNS)} (found {len(found)}: {header})"
        )
    return found[0]


def parse_outcomes(data: bytes, questions: dict[str, list[str]]) -> list[OutcomeRow]:
    """The answers of an outcomes file, checked against the protocol's questions (id -> allowed answers).

    Raises BadInput naming every bad line (up to MAX_ERRORS_SHOWN of them).
    """
    reader = csv.reader(io.StringIO(_decode(data), newline=""))
    try:
        header = [name.strip().lower() for name in next(reader)]
    except (StopIteration, csv.Error) as error:
        raise BadInput(f"line 1: the header cannot be read as CSV ({error})") from None
    key_index, key_kind = _key_column(header)
    long_form = "question" in header or "answer" in header
    if long_form:
        if not ("question" in header and "answer" in header) or len(header) != 3:
            raise BadInput(
                f"line 1: a long outcomes file has exactly three columns: the key, question and answer (got {header})"
            )
        question_columns: list[tuple[int, str]] = []
    else:
        question_columns = [(i, name) for i, name in enumerate(header) if i != key_index]
        unknown = [name for _, name in question_columns if name not in questions]
        if unknown or not question_columns:
            raise BadInput(
                f"line 1: columns {unknown or '(none)'} are not questions of the protocol "
                f"(its questions: {', '.join(sorted(questions)) or 'none'})"
            )
    rows: list[OutcomeRow] = []
    errors: list[str] = []
    try:
        for record_number, cells in enumerate(reader, start=2):
            line = record_number
            if len(rows) > MAX_ROWS:
                raise BadInput(f"line {line}: the outcomes file has more than {MAX_ROWS} answers")
            if not any(cell.strip() for cell in cells):
                continue  # a blank line
            if len(cells) != len(header):
                errors.append(f"line {line}: {len(cells)} columns, the header has {len(header)}")
                continue
            key = cells[key_index].strip()
            if not key:
                errors.append(f"line {line}: the {header[key_index]} column is empty")
                continue
            if long_form:
                pairs = [(cells[header.index("question")].strip().lower(), cells[header.index("answer")].strip())]
            else:
                pairs = [(name, cells[i].strip()) for i, name in question_columns if cells[i].strip()]
            for question, answer in pairs:
                if question not in questions:
                    errors.append(
                        f"line {line}: {question!r} is not a question of the protocol "
                        f"(its questions: {', '.join(sorted(questions)) or 'none'})"
                    )
                elif answer not in questions[question]:
                    errors.append(
                        f"line {line}: question {question!r} takes one of {questions[question]}, not {answer!r}"
                    )
                else:
                    rows.append(OutcomeRow(line, key_kind, key, question, answer))
    except csv.Error as error:
        errors.append(f"line {reader.line_num}: not valid CSV ({error})")
    if errors:
        raise BadInput(_summary(errors))
    if not rows:
        raise BadInput("the outcomes file has no answers (only a header or empty cells)")
    return rows


def _summary(errors: Sequence[str]) -> str:
    shown = "; ".join(errors[:MAX_ERRORS_SHOWN])
    more = len(errors) - MAX_ERRORS_SHOWN
    return f"{len(errors)} bad row(s): {shown}" + (f"; and {more} more" if more > 0 else "")


# --- resolving keys ------------------------------------------------------------------------------------------


def accession_key(pseudonymizer: Pseudonymizer, original_accession: str) -> str:
    """What the de-identification wrote for this original AccessionNumber (and the catalog recorded)."""
    return pseudonymizer.accession_number(original_accession.strip())


def studies_by_accession(
    session: Session, pseudonymizer: Pseudonymizer, accessions: Iterable[str]
) -> dict[str, list[CatalogStudy]]:
    """Original accession -> catalog studies (usually one) recorded under its keyed HMAC."""
    keys = {accession: accession_key(pseudonymizer, accession) for accession in accessions}
    found: dict[str, list[CatalogStudy]] = {}
    if keys:
        rows = session.scalars(select(CatalogStudy).where(CatalogStudy.accession_key.in_(set(keys.values()))))
        by_key: dict[str, list[CatalogStudy]] = {}
        for study in rows:
            by_key.setdefault(str(study.accession_key), []).append(study)
        for accession, key in keys.items():
            found[accession] = by_key.get(key, [])
    return found


def patient_pseudonyms(session: Session, patient_ids: Iterable[int]) -> dict[int, str]:
    wanted = set(patient_ids)
    if not wanted:
        return {}
    return dict(
        session.execute(select(CatalogPatient.id, CatalogPatient.pseudonym).where(CatalogPatient.id.in_(wanted)))
        .tuples()
        .all()
    )


def _items_of(
    session: Session, project: Project, rows: list[OutcomeRow], pseudonymizer: Pseudonymizer
) -> tuple[dict[tuple[str, str], list[ProjectItem]], dict[int, str]]:
    """(key kind, key) -> the project's items it names, and catalog patient id -> pseudonym."""
    items = list(session.scalars(select(ProjectItem).where(ProjectItem.project_id == project.id)))
    by_patient: dict[int, list[ProjectItem]] = {}
    by_study: dict[int, list[ProjectItem]] = {}
    for item in items:
        by_patient.setdefault(item.patient_id, []).append(item)
        by_study.setdefault(item.study_id, []).append(item)
    pseudonyms = patient_pseudonyms(session, by_patient)
    patient_ids = {pseudonym: patient_id for patient_id, pseudonym in pseudonyms.items()}
    accessions = studies_by_accession(session, pseudonymizer, {r.key for r in rows if r.key_kind == "accession"})
    resolved: dict[tuple[str, str], list[ProjectItem]] = {}
    for row in rows:
        key = (row.key_kind, row.key)
        if key in resolved:
            continue
        if row.key_kind == "patient":
            patient_id = patient_ids.get(row.key)
            resolved[key] = by_patient.get(patient_id, []) if patient_id is not None else []
        else:
            resolved[key] = [i for study in accessions.get(row.key, []) for i in by_study.get(study.id, [])]
    return resolved, pseudonyms


def import_outcomes(
    session: Session, project: Project, data: bytes, file_name: str, importer: User, pseudonymizer: Pseudonymizer
) -> ImportResult:
    """Check and store an outcomes file; the items it names get ground truth as their final label.

    Every row must name at least one item of the project, and one file must not give one item two different
    answers to a question. Nothing is written unless the whole file is good.
    """
    from pacslabel.review.workflow import set_ground_truth_final  # the workflow imports this module

    questions = {q.id: list(q.answers) for q in project_spec(project).protocol.questions}
    if not questions:
        raise BadInput(f"project {project.slug}'s protocol has no classification questions to import outcomes for")
    rows = parse_outcomes(data, questions)
    resolved, pseudonyms = _items_of(session, project, rows, pseudonymizer)
    errors: list[str] = []
    decided: dict[tuple[int, str], OutcomeRow] = {}
    for row in rows:
        items = resolved[(row.key_kind, row.key)]
        if not items:
            # The message never repeats an original accession number (it is PHI): only the kind of key.
            what = f"patient {row.key!r}" if row.key_kind == "patient" else "the accession number"
            errors.append(f"line {row.line}: {what} matches no item of project {project.slug}")
            continue
        for item in items:
            earlier = decided.get((item.id, row.question))
            if earlier is not None and earlier.answer != row.answer:
                errors.append(
                    f"line {row.line}: item {item.id} already has {row.question}={earlier.answer!r} "
                    f"from line {earlier.line}, not {row.answer!r}"
                )
            decided.setdefault((item.id, row.question), row)
    if errors:
        raise BadInput(_summary(errors))
    batch = GroundTruthImport(
        project_id=project.id,
        file_name=file_name[:255],
        sha256=hashlib.sha256(data).hexdigest(),
        importer_id=importer.id,
        row_count=len({r.line for r in rows}),
        created_at=utcnow(),
    )
    session.add(batch)
    session.flush()
    items_by_id = {i.id: i for items in resolved.values() for i in items}
    for (item_id, question), row in sorted(decided.items(), key=lambda entry: (entry[1].line, entry[0])):
        session.add(
            GroundTruthAnswer(
                import_id=batch.id,
                item_id=item_id,
                question=question,
                answer=row.answer,
                line=row.line,
                key_kind=row.key_kind,
                patient_pseudonym=pseudonyms.get(items_by_id[item_id].patient_id, ""),
            )
        )
    session.flush()
    item_ids = sorted({item_id for item_id, _ in decided})
    for item_id in item_ids:
        set_ground_truth_final(session, item_id, batch.id, importer)
    record(
        session,
        importer.username,
        "ground_truth_import",
        "project",
        project.id,
        import_id=batch.id,
        file_name=batch.file_name,
        sha256=batch.sha256,
        rows=batch.row_count,
        answers=len(decided),
        items=len(item_ids),
        source=FinalSource.GROUND_TRUTH.value,
    )
    return ImportResult(batch.id, batch.file_name, batch.row_count, len(decided), item_ids)


# --- reading back --------------------------------------------------------------------------------------------


def ground_truth_answers(session: Session, item_ids: Iterable[int]) -> dict[int, dict[str, str]]:
    """Item id -> {question id: answer} from the imported outcomes; a later import wins over an earlier one.
    Items without ground truth are absent."""
    wanted = sorted(set(item_ids))
    result: dict[int, dict[str, str]] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = session.execute(
            select(GroundTruthAnswer.item_id, GroundTruthAnswer.question, GroundTruthAnswer.answer)
            .where(GroundTruthAnswer.item_id.in_(chunk))
            .order_by(GroundTruthAnswer.import_id, GroundTruthAnswer.id)
        )
        for item_id, question, answer in rows:
            result.setdefault(int(item_id), {})[str(question)] = str(answer)
    return result


def ground_truth_rows(session: Session, item_id: int) -> list[dict[str, object]]:
    """Provenance: every imported row of the item with its file, line and importer (oldest import first)."""
    rows = session.execute(
        select(GroundTruthAnswer, GroundTruthImport, User.username)
        .join(GroundTruthImport, GroundTruthImport.id == GroundTruthAnswer.import_id)
        .join(User, User.id == GroundTruthImport.importer_id)
        .where(GroundTruthAnswer.item_id == item_id)
        .order_by(GroundTruthAnswer.import_id, GroundTruthAnswer.id)
    ).all()
    return [
        {
            "import_id": batch.id,
            "file_name": batch.file_name,
            "sha256": batch.sha256,
            "line": answer.line,
            "key_kind": answer.key_kind,
            "question": answer.question,
            "answer": answer.answer,
            "importer": username,
            "imported_at": batch.created_at.isoformat(),
        }
        for answer, batch, username in rows
    ]
