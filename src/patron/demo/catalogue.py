"""The demo organisation: three brands, their stores, category tree and products. Plain data.

The generator draws orders from this catalogue and ``seed.py`` writes it into the database, so
that every store code, SKU and category an order carries exists as reference data.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str
    category: str
    list_price: Decimal
    by_weight: bool = False  # sold by the kilogram: quantities like 0.532


@dataclass(frozen=True, slots=True)
class Store:
    code: str
    name: str
    city: str
    region: str
    brand: str
    size: float  # relative footfall


@dataclass(frozen=True, slots=True)
class Brand:
    code: str
    name: str
    vertical: str  # cafe | beauty | grocery: decides baskets, hours and seasons
    root_category: tuple[str, str]  # (code, name)
    categories: tuple[tuple[str, str, float], ...]  # (code, name, weight as basket anchor)
    # Which other categories join a basket anchored on a category, with what probability.
    affinities: dict[str, tuple[tuple[str, float], ...]]
    channels: tuple[tuple[str, float], ...]  # channel code, share of orders
    customer_share: float  # share of customers whose main brand this is
    purchases_per_year: float  # mean purchase rate of an active customer
    mean_purchases_before_dropout: float  # 1 / mean dropout probability


REGIONS = (
    ("EAST", "华东 East China"),
    ("NORTH", "华北 North China"),
    ("SOUTH", "华南 South China"),
    ("WEST", "西南 Southwest"),
    ("CENTRAL", "华中 Central China"),
)

# city -> (region, store code part)
CITIES = {
    "上海": ("EAST", "SH"), "杭州": ("EAST", "HZ"), "南京": ("EAST", "NJ"),
    "苏州": ("EAST", "SZ"), "北京": ("NORTH", "BJ"), "天津": ("NORTH", "TJ"),
    "广州": ("SOUTH", "GZ"), "深圳": ("SOUTH", "SZN"), "成都": ("WEST", "CD"),
    "重庆": ("WEST", "CQ"), "武汉": ("CENTRAL", "WH"), "长沙": ("CENTRAL", "CS"),
}

BRANDS = (
    Brand(
        code="BEAN", name="豆邻咖啡 Bean Neighbour", vertical="cafe",
        root_category=("cafe", "咖啡茶饮 Cafe"),
        categories=(("coffee", "咖啡 Coffee", 0.66), ("tea", "茶饮 Tea", 0.26),
                    ("bakery", "烘焙 Bakery", 0.05), ("merch", "周边 Merchandise", 0.03)),
        # A pastry comes with a coffee far more often than on its own or with a tea.
        affinities={"coffee": (("bakery", 0.40), ("coffee", 0.18), ("merch", 0.01)),
                    "tea": (("bakery", 0.15), ("tea", 0.15)),
                    "bakery": (("coffee", 0.60), ("bakery", 0.20)),
                    "merch": (("coffee", 0.50),)},
        channels=(("pos", 0.55), ("mini_program", 0.24), ("app", 0.05), ("meituan", 0.09),
                  ("eleme", 0.05), ("douyin", 0.02)),
        customer_share=0.50, purchases_per_year=16.0, mean_purchases_before_dropout=9.0,
    ),
    Brand(
        code="GLOW", name="素颜美妆 Glow Beauty", vertical="beauty",
        root_category=("beauty", "美妆个护 Beauty"),
        categories=(("skincare", "护肤 Skincare", 0.38), ("makeup", "彩妆 Makeup", 0.30),
                    ("fragrance", "香水 Fragrance", 0.12),
                    ("bodycare", "身体护理 Body care", 0.20)),
        # Skincare and makeup go together; fragrance is mostly a gift on its own.
        affinities={"skincare": (("makeup", 0.45), ("skincare", 0.30), ("bodycare", 0.05)),
                    "makeup": (("skincare", 0.45), ("makeup", 0.30)),
                    "fragrance": (("bodycare", 0.15),),
                    "bodycare": (("bodycare", 0.30), ("fragrance", 0.10))},
        channels=(("pos", 0.36), ("mini_program", 0.10), ("online_mall", 0.05),
                  ("tmall", 0.25), ("jd", 0.09), ("douyin", 0.15)),
        customer_share=0.20, purchases_per_year=4.5, mean_purchases_before_dropout=6.0,
    ),
    Brand(
        code="FRESH", name="鲜邻超市 Fresh Neighbour", vertical="grocery",
        root_category=("grocery", "生鲜超市 Grocery"),
        categories=(("fresh", "生鲜 Fresh", 0.40), ("dairy", "乳品 Dairy", 0.20),
                    ("snacks", "零食 Snacks", 0.22), ("beverages", "饮料 Beverages", 0.18)),
        # Two shopping missions: cooking (fresh food and dairy) and a snack run (snacks and
        # drinks); extra items follow the mission of the first.
        affinities={"fresh": (("fresh", 0.60), ("dairy", 0.45), ("beverages", 0.05)),
                    "dairy": (("fresh", 0.40), ("dairy", 0.25)),
                    "snacks": (("beverages", 0.55), ("snacks", 0.40)),
                    "beverages": (("snacks", 0.50), ("beverages", 0.30))},
        channels=(("pos", 0.52), ("mini_program", 0.10), ("app", 0.10), ("meituan", 0.14),
                  ("eleme", 0.09), ("jd", 0.05)),
        customer_share=0.30, purchases_per_year=14.0, mean_purchases_before_dropout=8.0,
    ),
)
BRAND_BY_CODE = {b.code: b for b in BRANDS}

# (brand, city, district name, relative footfall); codes are brand-city-number: BEAN-SH-01.
_STORE_PLAN = (
    ("BEAN", "上海", "人民广场", 1.6),
    ("BEAN", "上海", "陆家嘴", 1.4),
    ("BEAN", "上海", "静安寺", 1.2),
    ("BEAN", "杭州", "西湖", 1.0),
    ("BEAN", "南京", "新街口", 0.9),
    ("BEAN", "北京", "国贸", 1.4),
    ("BEAN", "北京", "中关村", 1.1),
    ("BEAN", "深圳", "南山科技园", 1.2),
    ("BEAN", "广州", "天河城", 1.0),
    ("BEAN", "成都", "春熙路", 1.0),
    ("BEAN", "武汉", "光谷", 0.8),
    ("GLOW", "上海", "南京西路", 1.5),
    ("GLOW", "北京", "三里屯", 1.3),
    ("GLOW", "广州", "正佳广场", 1.0),
    ("GLOW", "成都", "太古里", 1.1),
    ("GLOW", "杭州", "湖滨银泰", 0.9),
    ("FRESH", "上海", "古北", 1.2),
    ("FRESH", "上海", "五角场", 1.1),
    ("FRESH", "苏州", "园区", 1.0),
    ("FRESH", "天津", "南开", 0.9),
    ("FRESH", "重庆", "观音桥", 1.0),
    ("FRESH", "长沙", "五一广场", 0.9),
)


def _stores() -> tuple[Store, ...]:
    out = []
    numbers: dict[tuple[str, str], int] = {}
    for brand, city, district, size in _STORE_PLAN:
        region, city_code = CITIES[city]
        n = numbers[(brand, city)] = numbers.get((brand, city), 0) + 1
        short = BRAND_BY_CODE[brand].name.split(" ")[0]
        out.append(Store(code=f"{brand}-{city_code}-{n:02d}", name=f"{short}{city}{district}店",
                         city=city, region=region, brand=brand, size=size))
    return tuple(out)


STORES = _stores()
STORES_BY_BRAND = {b.code: tuple(s for s in STORES if s.brand == b.code) for b in BRANDS}


def _p(sku: str, name: str, category: str, price: str, by_weight: bool = False) -> Product:
    return Product(sku, name, category, Decimal(price), by_weight)


PRODUCTS = (
    # Cafe
    _p("BEAN-AMERICANO", "美式咖啡 Americano", "coffee", "22.00"),
    _p("BEAN-LATTE", "拿铁 Latte", "coffee", "28.00"),
    _p("BEAN-CAPPUCCINO", "卡布奇诺 Cappuccino", "coffee", "28.00"),
    _p("BEAN-FLATWHITE", "澳白 Flat white", "coffee", "30.00"),
    _p("BEAN-COCONUT-LATTE", "生椰拿铁 Coconut latte", "coffee", "32.00"),
    _p("BEAN-COLDBREW", "冷萃 Cold brew", "coffee", "30.00"),
    _p("BEAN-MOCHA", "摩卡 Mocha", "coffee", "32.00"),
    _p("BEAN-OSMANTHUS-LATTE", "桂花拿铁 Osmanthus latte", "coffee", "34.00"),
    _p("BEAN-MATCHA-LATTE", "抹茶拿铁 Matcha latte", "tea", "30.00"),
    _p("BEAN-OOLONG", "冷泡乌龙 Cold-brew oolong", "tea", "22.00"),
    _p("BEAN-JASMINE", "茉莉绿茶 Jasmine green tea", "tea", "20.00"),
    _p("BEAN-FRUIT-TEA", "满杯水果茶 Fruit tea", "tea", "26.00"),
    _p("BEAN-CROISSANT", "可颂 Croissant", "bakery", "16.00"),
    _p("BEAN-BAGEL", "贝果 Bagel", "bakery", "14.00"),
    _p("BEAN-CHEESECAKE", "芝士蛋糕 Cheesecake", "bakery", "32.00"),
    _p("BEAN-MUFFIN", "蓝莓玛芬 Blueberry muffin", "bakery", "18.00"),
    _p("BEAN-SANDWICH", "火腿芝士三明治 Ham and cheese sandwich", "bakery", "26.00"),
    _p("BEAN-TUMBLER", "随行杯 Tumbler", "merch", "128.00"),
    _p("BEAN-BEANS-250G", "咖啡豆250克 Coffee beans 250 g", "merch", "88.00"),
    _p("BEAN-DRIP-BAGS", "挂耳咖啡10片 Drip bags x10", "merch", "59.00"),
    # Beauty
    _p("GLOW-CLEANSER", "氨基酸洁面 Amino cleanser", "skincare", "89.00"),
    _p("GLOW-TONER", "保湿爽肤水 Hydrating toner", "skincare", "159.00"),
    _p("GLOW-SERUM", "修护精华 Repair serum", "skincare", "329.00"),
    _p("GLOW-CREAM", "面霜 Moisturising cream", "skincare", "269.00"),
    _p("GLOW-SUNSCREEN", "防晒乳 Sunscreen SPF50", "skincare", "139.00"),
    _p("GLOW-MASK-5", "补水面膜5片 Sheet masks x5", "skincare", "99.00"),
    _p("GLOW-EYE-CREAM", "眼霜 Eye cream", "skincare", "299.00"),
    _p("GLOW-LIPSTICK", "丝绒口红 Velvet lipstick", "makeup", "189.00"),
    _p("GLOW-CUSHION", "气垫粉底 Cushion foundation", "makeup", "239.00"),
    _p("GLOW-EYESHADOW", "九色眼影 Eyeshadow palette", "makeup", "219.00"),
    _p("GLOW-MASCARA", "睫毛膏 Mascara", "makeup", "129.00"),
    _p("GLOW-BROW", "眉笔 Brow pencil", "makeup", "69.00"),
    _p("GLOW-SETTING-SPRAY", "定妆喷雾 Setting spray", "makeup", "149.00"),
    _p("GLOW-EDP-50", "淡香精50毫升 Eau de parfum 50 ml", "fragrance", "589.00"),
    _p("GLOW-EDT-30", "淡香水30毫升 Eau de toilette 30 ml", "fragrance", "329.00"),
    _p("GLOW-BODY-MIST", "身体香氛喷雾 Body mist", "fragrance", "159.00"),
    _p("GLOW-BODY-LOTION", "身体乳 Body lotion", "bodycare", "129.00"),
    _p("GLOW-HAND-CREAM", "护手霜 Hand cream", "bodycare", "59.00"),
    _p("GLOW-SHOWER-GEL", "香氛沐浴露 Scented shower gel", "bodycare", "99.00"),
    _p("GLOW-BODY-SCRUB", "身体磨砂膏 Body scrub", "bodycare", "119.00"),
    # Grocery
    _p("FRESH-APPLE", "烟台苹果 Yantai apples (kg)", "fresh", "12.80", True),
    _p("FRESH-BANANA", "香蕉 Bananas (kg)", "fresh", "7.98", True),
    _p("FRESH-TOMATO", "番茄 Tomatoes (kg)", "fresh", "8.60", True),
    _p("FRESH-BOKCHOY", "上海青 Bok choy (kg)", "fresh", "6.80", True),
    _p("FRESH-PORK-BELLY", "五花肉 Pork belly (kg)", "fresh", "39.80", True),
    _p("FRESH-CHICKEN-WINGS", "鸡翅中 Chicken wings (kg)", "fresh", "45.90", True),
    _p("FRESH-SHRIMP", "基围虾 Shrimp (kg)", "fresh", "78.00", True),
    _p("FRESH-EGGS-10", "鲜鸡蛋10枚 Eggs x10", "fresh", "15.90"),
    _p("FRESH-TOFU", "嫩豆腐 Silken tofu", "fresh", "3.50"),
    _p("FRESH-MILK-1L", "鲜牛奶1升 Fresh milk 1 L", "dairy", "16.80"),
    _p("FRESH-YOGURT-4", "原味酸奶4杯 Yogurt x4", "dairy", "13.90"),
    _p("FRESH-CHEESE-STICKS", "奶酪棒 Cheese sticks", "dairy", "29.90"),
    _p("FRESH-BUTTER", "黄油 Butter 200 g", "dairy", "24.50"),
    _p("FRESH-CHIPS", "薯片 Potato chips", "snacks", "8.90"),
    _p("FRESH-NUTS", "每日坚果 Daily nuts", "snacks", "59.00"),
    _p("FRESH-SPICY-STRIPS", "辣条 Spicy strips", "snacks", "5.50"),
    _p("FRESH-SEAWEED", "海苔 Seaweed snack", "snacks", "12.90"),
    _p("FRESH-COOKIES", "曲奇 Butter cookies", "snacks", "19.90"),
    _p("FRESH-WATER-24", "矿泉水24瓶 Mineral water x24", "beverages", "29.90"),
    _p("FRESH-COLA-6", "可乐6罐 Cola x6", "beverages", "15.90"),
    _p("FRESH-TEA-DRINK", "无糖乌龙茶 Unsweetened oolong", "beverages", "5.00"),
    _p("FRESH-JUICE", "橙汁1升 Orange juice 1 L", "beverages", "18.90"),
    _p("FRESH-BEER-6", "啤酒6罐 Beer x6", "beverages", "35.00"),
)
PRODUCTS_BY_CATEGORY: dict[str, tuple[Product, ...]] = {}
for _product in PRODUCTS:
    PRODUCTS_BY_CATEGORY[_product.category] = PRODUCTS_BY_CATEGORY.get(
        _product.category, ()) + (_product,)
CATEGORY_NAMES = {code: name for b in BRANDS for code, name, _w in b.categories}
