"""`/api/v1/tokens`: API tokens (admin scope)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from controller.api.deps import ReadSessionDep, SessionDep
from controller.api.security import Admin
from controller.services import tokens as service
from schemas.api import ErrorBody, TokenCreate, TokenCreated, TokenOut, parse_duration
from schemas.common import utcnow

router = APIRouter(prefix="/tokens", tags=["tokens"], dependencies=[Admin])


@router.post("", status_code=201, summary="Create an API token (its secret is shown once)")
def create_token(session: SessionDep, body: TokenCreate) -> TokenCreated:
    expires_at = utcnow() + parse_duration(body.expires) if body.expires else None
    token, secret = service.create_token(session, body.name, body.scope, expires_at)
    return TokenCreated(**TokenOut.model_validate(token).model_dump(), token=secret)


@router.get("", summary="List API tokens (never their secrets)")
def list_tokens(session: ReadSessionDep) -> list[TokenOut]:
    return [TokenOut.model_validate(t) for t in service.list_tokens(session)]


@router.delete(
    "/{token_id}", summary="Revoke an API token",
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody, "description": "the FLEET_ADMIN_TOKEN token"}},
)
def revoke_token(request: Request, session: SessionDep, token_id: str) -> TokenOut:
    token = service.revoke_token(session, token_id)
    request.app.state.verified_tokens.forget(token.id)  # refused from the next request on
    return TokenOut.model_validate(token)
