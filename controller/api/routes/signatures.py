"""`/api/v1/signatures`: sign a hand-written task for `mosquitto_pub` (admin scope: a signature
is a command every trusting device obeys), and the public key devices trust (read scope)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from controller.api.security import Admin, Read
from controller.services.errors import ConflictError
from schemas.api import ErrorBody, SignatureRequest, SigningKeyOut
from schemas.signing import Signer, public_key_text
from schemas.tasks import TaskEnvelope

router = APIRouter(prefix="/signatures", tags=["signatures"])

OFF = "this controller does not sign tasks: start it with FLEET_TASK_SIGNING=true (see the README, Signed tasks)"


def _signer(request: Request) -> Signer:
    signer: Signer | None = request.app.state.signer
    if signer is None:
        raise ConflictError(OFF)
    return signer


@router.post("", status_code=201, dependencies=[Admin], response_model_exclude_none=True,
             summary="Sign a task for one device, group or the broadcast topic (valid there only, for 5 minutes)",
             responses={409: {"model": ErrorBody, "description": "task signing is off"}})
def sign_task(request: Request, body: SignatureRequest) -> TaskEnvelope:
    return _signer(request).sign(body.task, body.topic)


@router.get("/key", dependencies=[Read], summary="The public key devices trust for the controller's signatures",
            responses={409: {"model": ErrorBody, "description": "task signing is off"}})
def signing_key(request: Request) -> SigningKeyOut:
    signer = _signer(request)
    return SigningKeyOut(key_id=signer.key_id, public_key=public_key_text(signer.public_key))
