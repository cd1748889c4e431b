"""`/api/v1/identities`: provision and revoke broker logins for devices, the controller and
operators (admin scope). Every change is applied to the broker files at once."""

from __future__ import annotations

from fastapi import APIRouter

from broker.connection import BrokerAddress
from controller.api.deps import PublisherDep, ReadSessionDep, SessionDep, SettingsDep
from controller.api.security import Admin
from controller.services import groups
from controller.services import identities as service
from schemas.api import BrokerFiles, ErrorBody, IdentityCreate, IdentityCreated, IdentityOut

router = APIRouter(prefix="/identities", tags=["identities"], dependencies=[Admin])


@router.post("", status_code=201, summary="Provision a device, controller or operator on the broker",
             responses={409: {"model": ErrorBody}})
def add_identity(session: SessionDep, settings: SettingsDep, publisher: PublisherDep,
                 body: IdentityCreate) -> IdentityCreated:
    """A device's groups become its membership too (`services.groups`): broker, controller and device agree."""
    identity, secret = service.add_identity(session, body)
    outcome = groups.after_provision(session, identity, settings, publisher)
    return IdentityCreated(**IdentityOut.model_validate(identity).model_dump(), secret=secret, broker_files=outcome)


@router.get("", summary="List MQTT identities (never their secrets)")
def list_identities(session: ReadSessionDep) -> list[IdentityOut]:
    return [IdentityOut.model_validate(i) for i in service.list_identities(session)]


@router.get("/broker-files", summary="The Mosquitto password and ACL files and the NATS authorization file for every live identity")
def broker_files(session: ReadSessionDep) -> BrokerFiles:
    passwords, acls = service.broker_files(session)
    authorization, left_out = service.nats_file(session)
    return BrokerFiles(password_file=passwords, acl_file=acls, nats_auth_file=authorization, nats_left_out=left_out)


@router.delete("/{name}", summary="Revoke an identity (the broker refuses it from the next connection)",
               responses={404: {"model": ErrorBody},
                          409: {"model": ErrorBody, "description": "the controller's own broker login"}})
def revoke_identity(session: SessionDep, settings: SettingsDep, name: str) -> IdentityOut:
    identity = service.revoke_identity(session, name, BrokerAddress.from_url(str(settings.mqtt_urls[0])).username)
    service.apply_to_broker(session, settings)
    return IdentityOut.model_validate(identity)
