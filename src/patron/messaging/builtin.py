"""Templates Patron's own features send. An owner may save a template with the same code to
change the wording (it must declare the same variables, since the callers pass those)."""

from __future__ import annotations

from patron.messaging.model import Template

BUILTIN: dict[str, Template] = {t.code: t for t in (
    Template(
        code="points_expiring",
        variables=("program", "member_code", "points", "expires_on", "balance"),
        subject={"zh": "您有 {{ points }} 积分即将到期", "en": "{{ points }} points expire soon"},
        body={"zh": "您有 {{ points }} 积分将于 {{ expires_on }} 到期，"
                    "当前可用 {{ balance }} 积分，请及时使用。",
              "en": "{{ points }} of your points expire on {{ expires_on }}; you have "
                    "{{ balance }} points to spend."},
        wechat_fields={"thing1": "{{ points }} 积分", "time2": "{{ expires_on }}",
                       "number3": "{{ balance }}"},
        builtin=True,
    ),
    Template(
        code="otp_login",
        variables=("code", "minutes"),
        subject={"zh": "登录验证码", "en": "Your sign-in code"},
        body={"zh": "您的登录验证码是 {{ code }}，{{ minutes }} 分钟内有效，请勿告诉他人。",
              "en": "Your sign-in code is {{ code }}. It is valid for {{ minutes }} minutes; "
                    "do not share it."},
        wechat_fields={"character_string1": "{{ code }}", "time2": "{{ minutes }} 分钟"},
        builtin=True,
    ),
    # Security alerts to the owners (patron.security.alerts, PATRON_ALERT_RECIPIENTS).
    Template(
        code="security_alert",
        variables=("kind", "subject", "summary", "at"),
        subject={"zh": "Patron 安全提醒：{{ kind }}（{{ subject }}）",
                 "en": "Patron security alert: {{ kind }} ({{ subject }})"},
        body={"zh": "{{ at }}（UTC）安全提醒 {{ kind }}：{{ subject }}。{{ summary }}。"
                    "请在 Patron 的“安全提醒”页面查看。",
              "en": "Security alert {{ kind }} at {{ at }} UTC: {{ subject }}. {{ summary }}. "
                    "See the alerts page in Patron."},
        wechat_fields={"thing1": "{{ kind }}", "thing2": "{{ subject }}", "time3": "{{ at }}"},
        builtin=True,
    ),
)}
