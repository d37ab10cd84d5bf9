"""The receiver most users would write by hand, as FastAPI's SQL tutorial writes an endpoint: a sync
``def``, a SQLAlchemy ORM ``Session`` per request from a dependency, a pydantic model of the
notification, the Sign checked (md5(Timestamp + key), as MPS signs), one commit per request on SQLite
in WAL mode with ``synchronous=FULL``.

For the HTTP benchmark (bench/ingest_http.py), served by uvicorn with uvloop and httptools, one
worker, no access log:

    BENCH_FASTAPI_DB=/tmp/f.db BENCH_FASTAPI_KEY=k uvicorn fastapi_app:app --app-dir bench \
        --loop uvloop --http httptools --workers 1 --no-access-log --port 8000
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Integer, String, Text, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

DATABASE_URL = f"sqlite:///{os.environ.get('BENCH_FASTAPI_DB', 'fastapi-bench.db')}"
NOTIFY_KEY = os.environ.get("BENCH_FASTAPI_KEY", "")
SKEW_SECONDS = 60

engine = create_engine(DATABASE_URL, connect_args={"check_same_thread": False})


@event.listens_for(engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record):  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


SessionLocal = sessionmaker(autocommit=False, autoflush=False, bind=engine)


class Base(DeclarativeBase):
    pass


class Notification(Base):
    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[str] = mapped_column(String, index=True)
    session_id: Mapped[str] = mapped_column(String, unique=True)
    notification_type: Mapped[str] = mapped_column(String)
    received_at: Mapped[float]
    body: Mapped[str] = mapped_column(Text)


Base.metadata.create_all(bind=engine)


class NotificationIn(BaseModel):
    """The head of an MPS live-stream notification; the rest of the body is kept as it came."""

    model_config = ConfigDict(extra="allow")

    NotificationType: str
    TaskId: str
    SessionId: str = ""
    SessionContext: str = ""
    Timestamp: int
    Sign: str


def get_db() -> Iterator[Session]:
    db = SessionLocal()
    try:
        yield db
    finally:
        db.close()


SessionDep = Annotated[Session, Depends(get_db)]

app = FastAPI()


@app.post("/v1/notifications")
def receive_notification(notification: NotificationIn, db: SessionDep) -> dict[str, int]:
    expected = hashlib.md5(f"{notification.Timestamp}{NOTIFY_KEY}".encode()).hexdigest()
    if not hmac.compare_digest(expected, notification.Sign.strip().lower()):
        raise HTTPException(status_code=401, detail="bad Sign")
    if time.time() > notification.Timestamp + SKEW_SECONDS:
        raise HTTPException(status_code=401, detail="signature expired")
    row = Notification(
        task_id=notification.TaskId,
        session_id=notification.SessionId,
        notification_type=notification.NotificationType,
        received_at=time.time(),
        body=notification.model_dump_json(),
    )
    db.add(row)
    db.commit()
    return {"code": 0}
