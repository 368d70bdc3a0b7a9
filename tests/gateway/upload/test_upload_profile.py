"""The province profile: shipped profiles load; a wrong one stops the gateway and says which key."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from gateway.settings import load_settings
from gateway.upload.mapping import hmac_signature, request_body, to_province
from gateway.upload.profile import PROFILES_DIR, load_profile
from tests.gateway.upload.conftest import profile_variant

PAYLOAD = {
    "record_id": "17:1", "evaluation_id": 17, "version": 1, "change": "evaluation", "case_no": "HB-2026-0001",
    "item_code": "11610902MB0001", "item_name": "个体工商户设立登记", "org_code": "hanbin-market",
    "region_code": "610902", "channel": "sms", "level": 2, "staff_id": "HB-017", "staff_level": None,
    "reason_codes": [213, 210], "content": "同一份证明交了三次", "evaluated_at": "2026-03-04T02:00:00+00:00",
    "changed_at": "2026-03-04T02:00:00+00:00", "evaluator_type": "person", "valid": True, "decision": None,
    "rectification": None, "callback_result": None,
}


def test_both_shipped_profiles_load():
    assert {p.stem for p in PROFILES_DIR.glob("*.toml")} == {"gbt39046", "provincial"}
    standard, provincial = load_profile("gbt39046"), load_profile("provincial")
    # Our 5 非常满意 is GB/T 39046 A.8's 1, and the deployed interface's 5.
    assert [standard.level_code(level) for level in (5, 4, 3, 2, 1)] == [1, 2, 3, 4, 5]
    assert [provincial.level_code(level) for level in (5, 4, 3, 2, 1)] == [5, 4, 3, 2, 1]
    assert standard.channel_code("sms") == "短信" and provincial.channel_code("sms") == "7"
    assert provincial.channel_code("phone") == "6"


def test_the_deployed_interface_gets_its_own_field_names_and_codes():
    body = to_province(PAYLOAD, load_profile("provincial"))
    assert body == {
        "source": "ankang-hcp", "assessId": "17:1", "assessVersion": 1, "assessNumber": "1",
        "projectNo": "HB-2026-0001", "taskCode": "11610902MB0001", "taskName": "个体工商户设立登记",
        "deptCode": "hanbin-market", "areaCode": "610902", "pf": "7", "satisfaction": 2, "workerId": "HB-017",
        "evalDetail": "213,210", "writingEvaluation": "同一份证明交了三次", "assessTime": "2026-03-04 10:00:00",
        "updateTime": "2026-03-04 10:00:00", "userProp": "1", "isValid": "1",
    }


def test_the_standard_profile_reverses_the_levels_and_names_channels_in_words():
    later = {**PAYLOAD, "version": 3, "record_id": "17:3", "valid": False, "rectification": "已培训",
             "callback_result": "satisfied", "staff_level": 5}
    body = to_province(later, load_profile("gbt39046"))
    assert body["评价编号"] == "17:3" and body["评价次数"] == "追加" and body["评价等级"] == 4
    assert body["服务人员评价等级"] == 1 and body["评价渠道"] == "短信" and body["是否有效"] == "否"
    assert body["整改情况"] == "已培训" and body["回访结果"] == "满意"


def test_batches_go_under_the_batch_field(tmp_path):
    path = profile_variant(tmp_path, **{"batch_size = 1": "batch_size = 20"})
    body = request_body([PAYLOAD, {**PAYLOAD, "record_id": "18:1"}], load_profile(path))
    assert body.startswith(b'{"data":[{') and b'"18:1"' in body


def test_the_signature_covers_key_time_and_body():
    one = hmac_signature("secret", "key", "1767225600000", b'{"a":1}')
    assert len(one) == 64
    assert one != hmac_signature("secret", "key", "1767225600001", b'{"a":1}')
    assert one != hmac_signature("secret", "key", "1767225600000", b'{"a":2}')


@pytest.mark.parametrize("old,new,says", [
    ("timeout_seconds = 10", "timeout_seconds = 10\nretries = 3", "endpoint.retries: unknown key"),
    ("[levels]", "[level_codes]\n[levels]", "level_codes: unknown key"),
    ('phone = "6"       # 电话\n', "", "no mapping for channel(s) ['phone']"),
    ('sms = "7"         # 短信', 'sms = "7"\nfax = "9"', "unknown channels ['fax']"),
    ('sms = "7"         # 短信', 'sms = "系统默认评价"', "系统默认"),
    ('direction = "5-1"', 'direction = "up"', "levels.direction"),
    ('record_id = "assessId"\n', "", "fields.record_id: Field required"),
    ('timezone = "Asia/Shanghai"', 'timezone = "Asia/Atlantis"', "unknown time zone"),
])
def test_a_wrong_profile_is_refused_naming_the_key(tmp_path, old, new, says):
    path = profile_variant(tmp_path, **{old: new})
    with pytest.raises(ValidationError) as refused:
        load_settings(province_profile=path, province_app_key="k", province_app_secret="s")
    assert says in str(refused.value)
    assert "GATEWAY_PROVINCE_PROFILE" in str(refused.value) and path in str(refused.value)


def test_secrets_come_from_the_settings_and_are_required(tmp_path):
    with pytest.raises(ValidationError, match="GATEWAY_PROVINCE_APP_KEY and GATEWAY_PROVINCE_APP_SECRET"):
        load_settings(province_profile="provincial")
    bearer = profile_variant(tmp_path, **{'kind = "hmac"': 'kind = "bearer"'})
    with pytest.raises(ValidationError, match="GATEWAY_PROVINCE_TOKEN"):
        load_settings(province_profile=bearer)
    assert load_settings(province_profile=bearer, province_token="t").province is not None
    with pytest.raises(ValidationError, match="cannot read it"):
        load_settings(province_profile=str(tmp_path / "missing.toml"))


def test_no_profile_means_no_upload():
    assert load_settings().province is None


@pytest.mark.parametrize("old,new,says", [
    ('qr = "3"          # 二维码\n', "", "no mapping for channel(s) ['qr']"),
    ("[levels]", "[levels]\nreverse = true", "levels.reverse: unknown key"),
])
def test_the_worker_refuses_to_start_with_a_wrong_profile(tmp_path, old, new, says):
    path = profile_variant(tmp_path, **{old: new})
    env = {**os.environ, "GATEWAY_PROVINCE_PROFILE": path, "GATEWAY_PROVINCE_APP_KEY": "k",
           "GATEWAY_PROVINCE_APP_SECRET": "s", "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db"}
    result = subprocess.run([sys.executable, "-m", "gateway", "worker"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert says in result.stderr and "cannot start" in result.stderr


def test_times_follow_the_profile(tmp_path):
    at = datetime(2026, 3, 4, 16, 30, tzinfo=timezone.utc)  # 00:30 on the 5th in Shanghai
    payload = {**PAYLOAD, "evaluated_at": at.isoformat()}
    assert to_province(payload, load_profile("provincial"))["assessTime"] == "2026-03-05 00:30:00"
    epoch = load_profile(profile_variant(tmp_path, **{'format = "%Y-%m-%d %H:%M:%S"': 'format = "epoch_ms"'}))
    assert to_province(payload, epoch)["assessTime"] == int(at.timestamp() * 1000)
