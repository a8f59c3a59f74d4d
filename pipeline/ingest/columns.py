"""Which input column holds what: review text, id, rating, product, category, date.

Exports name their columns in many ways (``Review Text``, ``reviewText``, ``review_body``,
``评论内容``, ``评价``), so names are first normalised (NFKC, camelCase split, case and
punctuation folded to ``snake_case``), then matched against known names per role in priority
order, then, for the text, the product id and the date, by the words they contain. Matching
uses names only, never values, so every chunk of a file maps the same way.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from pipeline.errors import InputError

#: Known names per role (normalised), best first.
ALIASES: dict[str, tuple[str, ...]] = {
    "text": (
        "text", "review", "content", "comment", "review_text", "review_body", "review_content",
        "comment_text", "comment_content", "body", "comments", "reviews", "feedback",
        "sentence", "评论", "内容", "评论内容", "评价", "评价内容", "评语", "用户评论",
        "买家评论", "买家评价", "评论正文", "正文", "初评内容", "初评", "首评内容", "首次评价",
        "初次评价", "评价正文",
    ),
    "id": ("review_id", "id", "comment_id", "reviewid", "评论id", "评价id", "评论编号", "评价编号"),
    "rating": ("rating", "stars", "star_rating", "star", "overall", "score", "review_rating",
               "rate", "评分", "星级", "打分", "评价星级", "评星"),
    "product_id": ("product_id", "asin", "sku", "item_id", "goods_id", "product", "sku_id",
                   "商品id", "商品编号", "商品", "产品id", "产品编号", "产品", "宝贝id", "宝贝编号",
                   "宝贝", "商品编码", "货号", "product_url", "product_link", "item_url",
                   "item_link", "商品链接", "宝贝链接", "商品网址", "商品地址"),
    "category": ("category", "product_category", "cat", "category_name", "department",
                 "department_name",
                 "品类", "类目", "分类", "类别", "商品类别", "商品分类"),
    "order_id": ("order_id", "order_number", "order_no", "orderid", "order", "订单号",
                 "订单编号", "订单id", "子订单号", "子订单编号", "主订单号", "交易号", "交易编号"),
    "created_at": ("created_at", "date", "review_date", "review_time", "time", "timestamp",
                   "created", "create_time", "created_time", "published_at", "posted_at",
                   "posted_on",
                   "评论时间", "评价时间", "日期", "时间", "创建时间", "发布时间"),
}

#: Words of a follow-up, an appended review or a reply: such a column is the review text only
#: when no other candidate exists (``追评内容`` loses to ``初评内容`` whatever the order).
FOLLOW_UP = ("追评", "追加", "追问", "follow", "followup", "additional", "append", "appended",
             "addition")
#: ... and a seller's reply or explanation is never the review text.
REPLY = ("回评", "解释", "商家", "卖家", "掌柜", "seller", "replies", "merchant", "shop")

#: Words that make a name a candidate for a role when no known name matched ...
_CONTAINS = {
    "text": ("review", "comment", "评论", "评价", "内容"),
    "product_id": ("product", "item", "goods", "商品", "产品"),
    "created_at": ("date", "time", "日期", "时间"),
}
#: ... unless it also holds one of these (a review's title, a seller's reply, a count).
_EXCLUDE = {
    "text": ("id", "title", "summary", "headline", "date", "time", "rating", "score", "star",
             "count", "number", "num", "helpful", "vote", "url", "link", "image", "reply",
             "response", "author", "user", "name", "type", "lang", "编号", "标题", "回复",
             "时间", "日期", "评分", "星级", "数", "图", "人", *FOLLOW_UP, *REPLY),
    "product_id": ("name", "title", "category", "price", "url", "link", "名称", "名", "类",
                   "链接", "网址"),
    "created_at": ("zone", "update", "modified"),
}
_ID_WORDS = ("id", "code", "number", "编号", "号")


def normalise_name(name: object) -> str:
    """``"Review Text"``, ``"reviewText"``, ``"review-text"`` -> ``"review_text"``;
    Chinese names lose spaces and full-width punctuation (``"评论 内容"`` -> ``"评论内容"``)."""
    text = unicodedata.normalize("NFKC", str(name)).strip()
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text)  # camelCase -> camel_Case
    text = re.sub(r"[^\w]+", "_", text.lower())  # \w keeps CJK characters
    text = re.sub(r"(?<=[^\x00-\x7f])_|_(?=[^\x00-\x7f])", "", text)
    return text.strip("_")


@dataclass(frozen=True)
class ColumnMap:
    """Input column names for each role the pipeline reads."""

    text: str
    id: str | None
    extras: dict[str, str]  # output name -> input column (also ``order_id``, for ids)

    def roles(self) -> dict[str, str | None]:
        """Every role and the column it was read from (None: not in the file); recorded in
        ``run.json`` and the ``runs`` table."""
        return {"text": self.text, "id": self.id,
                **{r: self.extras.get(r) for r in ("order_id", *EXTRA_ROLES)}}


#: Optional roles passed through to ``reviews`` (``order_id`` only keys the fallback id).
EXTRA_ROLES = ("rating", "product_id", "category", "created_at")

#: The CLI flag naming each role's column (also a ``Settings`` field without the dashes).
ROLE_FLAGS = {"text": "--text-column", "id": "--id-column", "product_id": "--product-column",
              "rating": "--rating-column", "created_at": "--date-column",
              "category": "--category-column", "order_id": "--order-column"}


def _words(normalised: str) -> list[str]:
    return [w for w in normalised.split("_") if w]


def _has(normalised: str, needles: tuple[str, ...]) -> bool:
    """Whole ASCII words, or CJK substrings (Chinese names have no word boundaries)."""
    words = _words(normalised)
    return any(n in words if n.isascii() else n in normalised for n in needles)


def _by_contents(role: str, names: dict[str, str], taken: set[str],
                 exclude: tuple[str, ...] | None = None) -> str | None:
    for norm, original in names.items():
        if original in taken or not _has(norm, _CONTAINS[role]):
            continue
        if _has(norm, _EXCLUDE[role] if exclude is None else exclude):
            continue
        if role == "product_id" and not (_has(norm, _ID_WORDS) or norm.endswith("id")):
            continue
        return original
    return None


def text_candidates(columns: list[str]) -> list[str]:
    """Every column that could hold the review text by its name (known names, names with
    review words, follow-ups and replies included), in column order: the columns whose fill
    the run compares with the chosen one (see :func:`pipeline.run.steps.note_columns`)."""
    aliases = set(ALIASES["text"])
    return [c for c in columns
            if (n := normalise_name(c)) in aliases or (
                _has(n, _CONTAINS["text"])
                and not _has(n, tuple(w for w in _EXCLUDE["text"] if w not in FOLLOW_UP)))]


def find_columns(
    columns: list[str], text_column: str | None = None, id_column: str | None = None,
    overrides: dict[str, str] | None = None,
) -> ColumnMap:
    """Map input column names to the roles the pipeline needs (see the module doc).

    ``overrides`` (role -> column; ``text_column``/``id_column`` are the same for those two
    roles) replace the search, matched case-insensitively. Raises
    :class:`~pipeline.errors.InputError` naming the columns that exist when no text column
    is found, or when an override names no column.
    """
    overrides = dict(overrides or {})
    if text_column is not None:
        overrides["text"] = text_column
    if id_column is not None:
        overrides["id"] = id_column
    names: dict[str, str] = {}
    for c in columns:
        names.setdefault(normalise_name(c), c)
    exact = {str(c).strip().lower(): c for c in columns}

    def override(value: str, role: str) -> str:
        found = exact.get(value.strip().lower()) or names.get(normalise_name(value))
        if found is None:
            raise InputError(f"{ROLE_FLAGS[role]} {value!r} is not a column; columns are "
                             f"{list(columns)}")
        return found

    def known(role: str, taken: set[str]) -> str | None:
        return next((names[a] for a in ALIASES[role] if a in names and names[a] not in taken),
                    None)

    forced = {role: override(value, role) for role, value in overrides.items()}
    text = forced.get("text") or (
        known("text", set()) or _by_contents("text", names, set())
        # only a follow-up or reply column looks like review text: better than nothing
        or _by_contents("text", names, set(),
                        tuple(w for w in _EXCLUDE["text"] if w not in FOLLOW_UP)))
    if text is None:
        raise InputError(
            f"no review text column in {list(columns)}: expected a name such as text, review, "
            "review_text, content, comment, body, 评论, 评论内容 or 评价 (any case or "
            "spelling); name the column with --text-column"
        )
    taken = {text, *forced.values()}
    id_ = forced.get("id") or known("id", taken)
    if id_:
        taken.add(id_)
    extras = {}
    for role in ("order_id", *EXTRA_ROLES):
        found = forced.get(role) or known(role, taken) or (
            _by_contents(role, names, taken) if role in _CONTAINS else None)
        if found is not None:
            extras[role] = found
            taken.add(found)
    return ColumnMap(text=text, id=id_, extras=extras)
